"""A client that trains nothing: it returns the arrays it received, with an example count of 100.

With run-config `secagg = true` the message goes through Flower's `secaggplus_mod` (the SecAgg+ client side:
keys, Shamir shares, masking); otherwise straight to the client, as in plain FedAvg.
"""
from flwr.app import Context, Message
from flwr.client import Client, ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable


class NoOp(NumPyClient):
    def fit(self, parameters, config):  # noqa: ANN001, ANN201 (Flower's signature)
        return parameters, 100, {}


def client_fn(context: Context) -> Client:
    return NoOp().to_client()


def maybe_secaggplus(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if context.run_config.get("secagg", False):
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


app = ClientApp(client_fn=client_fn, mods=[maybe_secaggplus])
