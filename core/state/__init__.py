"""The local state: the SQLite database every page of the GUI is drawn from.

`db.open_database` opens and migrates it, `models` is its schema, `recorder.SqliteRecorder`
writes federation rounds into it, `queries` reads it back as plain dataclasses and writes
datasets and training runs, `blobs.BlobStore` keeps model blobs (weights, named by their hash) beside it.
"""
