"""Training runs as the app sees them, one module per job:

* ``store``: the run folders on disk (``Run``, ``load_run``, ``list_runs``)
* ``launcher``: starting a run, or resuming one, in a background ``worker`` process
* ``lock``: one launched run at a time
* ``control``: cancelling the run in progress, promoting a finished one to the active model
* ``duration``: how long a run will take
* ``errors``: what a refused request raises
* ``app_settings``: the deployment's switches and caps
* ``ship``: shipping a run as a model
"""
