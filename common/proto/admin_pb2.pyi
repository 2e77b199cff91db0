from pfeddc.common.proto import federation_pb2 as _federation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClientStatus(_message.Message):
    __slots__ = ("client_id", "state", "num_examples", "rounds_participated", "last_seen_s", "last_round", "last_metrics", "failure")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[ClientStatus.State]
        TRAINING: _ClassVar[ClientStatus.State]
        SUBMITTED: _ClassVar[ClientStatus.State]
        IDLE: _ClassVar[ClientStatus.State]
        OFFLINE: _ClassVar[ClientStatus.State]
        FAILED: _ClassVar[ClientStatus.State]
    STATE_UNSPECIFIED: ClientStatus.State
    TRAINING: ClientStatus.State
    SUBMITTED: ClientStatus.State
    IDLE: ClientStatus.State
    OFFLINE: ClientStatus.State
    FAILED: ClientStatus.State
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_PARTICIPATED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_S_FIELD_NUMBER: _ClassVar[int]
    LAST_ROUND_FIELD_NUMBER: _ClassVar[int]
    LAST_METRICS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    state: ClientStatus.State
    num_examples: int
    rounds_participated: int
    last_seen_s: float
    last_round: int
    last_metrics: _federation_pb2.Metrics
    failure: str
    def __init__(self, client_id: _Optional[str] = ..., state: _Optional[_Union[ClientStatus.State, str]] = ..., num_examples: _Optional[int] = ..., rounds_participated: _Optional[int] = ..., last_seen_s: _Optional[float] = ..., last_round: _Optional[int] = ..., last_metrics: _Optional[_Union[_federation_pb2.Metrics, _Mapping]] = ..., failure: _Optional[str] = ...) -> None: ...

class Incident(_message.Message):
    __slots__ = ("ago_s", "round", "attempt", "kind", "client_id", "reason")
    AGO_S_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ago_s: float
    round: int
    attempt: int
    kind: str
    client_id: str
    reason: str
    def __init__(self, ago_s: _Optional[float] = ..., round: _Optional[int] = ..., attempt: _Optional[int] = ..., kind: _Optional[str] = ..., client_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class FederationStatus(_message.Message):
    __slots__ = ("federation_id", "model", "method", "phase", "round", "total_rounds", "min_clients", "sampled", "received", "deadline_s", "online_window_s", "uptime_s", "version", "clients", "attempt", "max_retries", "incidents", "aborted")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[FederationStatus.Phase]
        WAITING: _ClassVar[FederationStatus.Phase]
        TRAINING: _ClassVar[FederationStatus.Phase]
        FINISHED: _ClassVar[FederationStatus.Phase]
        ABORTED: _ClassVar[FederationStatus.Phase]
    PHASE_UNSPECIFIED: FederationStatus.Phase
    WAITING: FederationStatus.Phase
    TRAINING: FederationStatus.Phase
    FINISHED: FederationStatus.Phase
    ABORTED: FederationStatus.Phase
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    ONLINE_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    INCIDENTS_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    model: str
    method: str
    phase: FederationStatus.Phase
    round: int
    total_rounds: int
    min_clients: int
    sampled: int
    received: int
    deadline_s: float
    online_window_s: float
    uptime_s: float
    version: str
    clients: _containers.RepeatedCompositeFieldContainer[ClientStatus]
    attempt: int
    max_retries: int
    incidents: _containers.RepeatedCompositeFieldContainer[Incident]
    aborted: str
    def __init__(self, federation_id: _Optional[str] = ..., model: _Optional[str] = ..., method: _Optional[str] = ..., phase: _Optional[_Union[FederationStatus.Phase, str]] = ..., round: _Optional[int] = ..., total_rounds: _Optional[int] = ..., min_clients: _Optional[int] = ..., sampled: _Optional[int] = ..., received: _Optional[int] = ..., deadline_s: _Optional[float] = ..., online_window_s: _Optional[float] = ..., uptime_s: _Optional[float] = ..., version: _Optional[str] = ..., clients: _Optional[_Iterable[_Union[ClientStatus, _Mapping]]] = ..., attempt: _Optional[int] = ..., max_retries: _Optional[int] = ..., incidents: _Optional[_Iterable[_Union[Incident, _Mapping]]] = ..., aborted: _Optional[str] = ...) -> None: ...
