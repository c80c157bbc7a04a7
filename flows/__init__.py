"""mlcycle's Prefect flows (one file per flow, each a short story of task calls) and the ``mlcycle`` CLI.

prefect.yaml names the flows by path (``flows/<stage>.py:<flow>``); the code imports them as
``mlcycle.flows.<stage>``. Nothing is imported here.
"""
