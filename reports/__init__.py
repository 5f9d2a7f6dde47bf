"""`hive report`: a static status page, status.json and Prometheus metrics.

Read in this order: `queries.py` asks DuckDB for everything that needs aggregating (size
series, growth, fill projection, timelines) in a few set-based statements; `model.py`
joins that with `hive status`'s own evaluation (watcher/status.py, so state and "last
backup" mean the same everywhere) into plain rows; `render.py` turns rows into files
(jinja2 templates in `templates/`, status.json, metrics.prom) and swaps the folder in.
"""
