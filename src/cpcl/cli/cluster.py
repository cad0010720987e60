"""`cpcl cluster`: k-reciprocal Jaccard + DBSCAN pseudo labels of any L2-normalised feature file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cluster", help="cluster L2-normalised features (k-reciprocal Jaccard + DBSCAN) into pseudo labels",
        description="Labels in {-1, 0..K-1} (-1 = outlier), one per feature row, in row order.")
    parser.add_argument("--features", required=True, type=Path, metavar="FILE",
                        help="[N, D] float array: .npy, or .npz with --key (e.g. the output of cpcl encode)")
    parser.add_argument("--key", help="array name inside an .npz (default: its only array)")
    parser.add_argument("--out", required=True, type=Path, metavar="LABELS.npy", help="where the [N] int64 labels go")
    # defaults (None) are ClusterConfig's, docs/method.md's k1=30, k2=6, eps=0.6, min_samples=4; the
    # clustering module is imported only when the command runs, to keep `cpcl --help` fast
    parser.add_argument("--k1", type=int, help="k-reciprocal neighbourhood size")
    parser.add_argument("--k2", type=int, help="query-expansion neighbours (1: none)")
    parser.add_argument("--eps", type=float, help="DBSCAN radius on the Jaccard distance")
    parser.add_argument("--min-samples", type=int, help="DBSCAN core-point size")
    parser.add_argument("--convention", choices=["cluster_contrast", "zhong"],
                        help="neighbour lists: cluster_contrast (k1 members, self included: the field's code; "
                             "default) or zhong (k1 + 1: Zhong et al.'s re-ranking)")
    parser.add_argument("--knn", metavar="BACKEND",
                        help="nearest-neighbour search: auto (the faster exact engine here, measured once per "
                             "machine and size; default), flat (exact, torch), faiss_flat (exact, faiss) or hnsw "
                             "(approximate)")
    parser.add_argument("--knn-device", metavar="DEVICE",
                        help="where the flat search runs: auto (a GPU if there is one), cpu, cuda or cuda:N")
    parser.add_argument("--json", action="store_true",
                        help='print {"clusters", "outliers", "seconds", "peak_mb"} as JSON')
    parser.set_defaults(func=run_cluster)


def load_features(path: Path, key: str | None):
    """The [N, D] array stored in `path` (.npy, or one array of an .npz)."""
    import numpy as np

    from cpcl.utils.errors import DataError

    if not path.is_file():
        raise DataError(f"feature file not found: {path}")
    try:
        stored = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npy / .npz file ({err})") from None
    if not isinstance(stored, np.lib.npyio.NpzFile):
        if key is not None:
            raise DataError(f"{path} is a .npy file; --key applies to .npz files only")
        return stored
    names = list(stored.files)
    if key is None and len(names) == 1:
        key = names[0]
    if key not in names:
        wanted = "name the array with --key" if key is None else f"it has no array '{key}'"
        raise DataError(f"{path} holds arrays {', '.join(names)}; {wanted}")
    return stored[key]


def run_cluster(args: argparse.Namespace) -> int:
    import numpy as np

    from cpcl.clustering import ClusterConfig, FeatureError, JaccardOptions, cluster_features
    from cpcl.utils.errors import DataError

    given = {name: getattr(args, name) for name in ("k1", "k2", "eps", "min_samples", "convention")}
    search_given = {"knn_backend": args.knn, "knn_device": args.knn_device}
    search = JaccardOptions(**{k: v for k, v in search_given.items() if v is not None})
    cfg = ClusterConfig(**{k: v for k, v in given.items() if v is not None}, search=search)
    feats = load_features(args.features, args.key)
    try:
        result = cluster_features(feats, cfg)
    except FeatureError as err:
        raise DataError(f"{args.features}: {err}") from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, result.labels)
    summary = {"clusters": result.n_clusters, "outliers": result.n_outliers,
               "seconds": round(result.seconds["total"], 3), "peak_mb": round(result.peak_rss_mb, 1)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{len(result.labels)} points: {result.n_clusters} clusters, {result.n_outliers} outliers "
              f"in {summary['seconds']:.2f} s (peak RSS {summary['peak_mb']:.0f} MB) -> {args.out}")
    return 0
