"""Search product: index a gallery of person crops with a trained model, search it by sentence or example image.

Modules, bottom up: `config` (IndexConfig), `backends` (faiss exact / IVF and `milvus`, a Milvus
collection holding the vectors; `INDEX_BACKENDS`),
`gallery` (image files, metadata sidecar), `store` (the index directory), `encoder` (the model,
checked against the manifest), `build` (build, resume, add) and `search` (queries, filters).
The CLI (`cpcl index`, `cpcl search`, `cpcl serve`) and the web app sit on top. Nothing is
imported here, so `cpcl --help` stays fast.
"""
