"""The reconciler: hive.yaml -> observe each target -> a plan of plain changes -> apply.

Read in this order: `resources.py` (what a target holds), `desired.py` (what the file asks
for, pure), `plan.py` (the diff, pure), `targets/` (one module per target: observe and
apply; `targets/registry.py` lists the kinds), `engine.py` (the pipeline with its lock,
inventory and journal).
"""
