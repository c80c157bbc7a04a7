"""The typed records that cross stage boundaries (TFX-style artifacts): what tasks pass each other, what
``--json`` prints and what artifacts render. One module per stage; records import only other records and
the settings, never a logic module, so no two logic modules import each other for their types.
Nothing is imported here.
"""
