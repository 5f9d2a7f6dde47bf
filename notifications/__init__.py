"""`hive notify`: alerts about repositories in trouble, sent through apprise channels.

The pipeline is the rest of Hive's: the file (schemas) and `hive status`'s evaluation
(watcher/status.py) are observed; `alerts` decides, purely, what each channel must hear
given what was already sent (`state`, in DuckDB); `render` words it; `send` delivers it
through apprise, the only module that imports apprise. `checks` validates the
`notifications:` section; `secrets` resolves `{env:..}`/`{file:..}` and redacts.
"""
