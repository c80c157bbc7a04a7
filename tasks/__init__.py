"""mlcycle's logic: one module (or package) per life-cycle stage, plain typed functions, thin ``@task`` wrappers.

Nothing is imported here, so importing one stage never loads another (the serving bento ships a few of
these modules and none of Prefect). docs/architecture.md maps the rooms.
"""
