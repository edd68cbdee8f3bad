"""The `petseg` command: one module per command group, each a thin wrapper over a step.

`main.py` dispatches; `download.py` ... `push.py` wrap one pipeline step each,
`rollback.py` the model store's rollback, `serving.py` the local server and its
client, `kubeflow.py` the Kubeflow pipeline. main imports only the module of the
command it runs, so a DVC stage's code (dvc.yaml deps) is main plus that one module.
"""

from petseg.cli.main import main

__all__ = ["main"]
