"""The embedded backbone's pretraining pipeline: `python -m tools.embedded build|report`, from a checkout.

It writes the weights the client ships (client/embedded/weights, read by `pfeddc.client.embedded`); nothing here
runs on a client, so none of it is installed. It needs the `sim` extra (mlxtend, scikit-learn) and npm and pip
to reach their registries once, for the pretraining material.
"""
