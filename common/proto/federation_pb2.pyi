from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TensorSpec(_message.Message):
    __slots__ = ("name", "shape", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class FederationRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class FederationInfo(_message.Message):
    __slots__ = ("federation_id", "total_rounds", "current_round", "model", "prompt_config_json", "spec")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    total_rounds: int
    current_round: int
    model: str
    prompt_config_json: str
    spec: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    def __init__(self, federation_id: _Optional[str] = ..., total_rounds: _Optional[int] = ..., current_round: _Optional[int] = ..., model: _Optional[str] = ..., prompt_config_json: _Optional[str] = ..., spec: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("client_id", "num_examples", "spec")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    num_examples: int
    spec: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    def __init__(self, client_id: _Optional[str] = ..., num_examples: _Optional[int] = ..., spec: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("federation_id", "total_rounds", "current_round", "weight")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ROUND_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    total_rounds: int
    current_round: int
    weight: int
    def __init__(self, federation_id: _Optional[str] = ..., total_rounds: _Optional[int] = ..., current_round: _Optional[int] = ..., weight: _Optional[int] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("client_id", "max_wait_s")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    max_wait_s: float
    def __init__(self, client_id: _Optional[str] = ..., max_wait_s: _Optional[float] = ...) -> None: ...

class TrainSettings(_message.Message):
    __slots__ = ("local_epochs", "lr", "batch_size", "seed", "lr_vision", "lr_fusion", "clip_norm", "warmup_steps", "probe_steps")
    LOCAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LR_VISION_FIELD_NUMBER: _ClassVar[int]
    LR_FUSION_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    PROBE_STEPS_FIELD_NUMBER: _ClassVar[int]
    local_epochs: int
    lr: float
    batch_size: int
    seed: int
    lr_vision: float
    lr_fusion: float
    clip_norm: float
    warmup_steps: int
    probe_steps: int
    def __init__(self, local_epochs: _Optional[int] = ..., lr: _Optional[float] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., lr_vision: _Optional[float] = ..., lr_fusion: _Optional[float] = ..., clip_norm: _Optional[float] = ..., warmup_steps: _Optional[int] = ..., probe_steps: _Optional[int] = ...) -> None: ...

class TaskReply(_message.Message):
    __slots__ = ("action", "round", "total_rounds", "global_state", "global_sha256", "settings", "retry_after_s", "deadline_s")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[TaskReply.Action]
        TRAIN: _ClassVar[TaskReply.Action]
        WAIT: _ClassVar[TaskReply.Action]
        FINISHED: _ClassVar[TaskReply.Action]
    ACTION_UNSPECIFIED: TaskReply.Action
    TRAIN: TaskReply.Action
    WAIT: TaskReply.Action
    FINISHED: TaskReply.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STATE_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_SHA256_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    action: TaskReply.Action
    round: int
    total_rounds: int
    global_state: bytes
    global_sha256: str
    settings: TrainSettings
    retry_after_s: float
    deadline_s: float
    def __init__(self, action: _Optional[_Union[TaskReply.Action, str]] = ..., round: _Optional[int] = ..., total_rounds: _Optional[int] = ..., global_state: _Optional[bytes] = ..., global_sha256: _Optional[str] = ..., settings: _Optional[_Union[TrainSettings, _Mapping]] = ..., retry_after_s: _Optional[float] = ..., deadline_s: _Optional[float] = ...) -> None: ...

class Metrics(_message.Message):
    __slots__ = ("train_loss", "accuracy_before", "accuracy_after", "num_test_examples", "train_seconds", "accuracy_global")
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_AFTER_FIELD_NUMBER: _ClassVar[int]
    NUM_TEST_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_GLOBAL_FIELD_NUMBER: _ClassVar[int]
    train_loss: float
    accuracy_before: float
    accuracy_after: float
    num_test_examples: int
    train_seconds: float
    accuracy_global: float
    def __init__(self, train_loss: _Optional[float] = ..., accuracy_before: _Optional[float] = ..., accuracy_after: _Optional[float] = ..., num_test_examples: _Optional[int] = ..., train_seconds: _Optional[float] = ..., accuracy_global: _Optional[float] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("client_id", "round", "global_state", "num_examples", "metrics", "next_task_wait_s")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STATE_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    round: int
    global_state: bytes
    num_examples: int
    metrics: Metrics
    next_task_wait_s: float
    def __init__(self, client_id: _Optional[str] = ..., round: _Optional[int] = ..., global_state: _Optional[bytes] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Union[Metrics, _Mapping]] = ..., next_task_wait_s: _Optional[float] = ...) -> None: ...

class UpdateReply(_message.Message):
    __slots__ = ("duplicate", "received", "expected", "next_task")
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    received: int
    expected: int
    next_task: TaskReply
    def __init__(self, duplicate: _Optional[bool] = ..., received: _Optional[int] = ..., expected: _Optional[int] = ..., next_task: _Optional[_Union[TaskReply, _Mapping]] = ...) -> None: ...

class FailureReport(_message.Message):
    __slots__ = ("client_id", "round", "reason", "detail")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REASON_UNSPECIFIED: _ClassVar[FailureReport.Reason]
        DIVERGED: _ClassVar[FailureReport.Reason]
        COLLAPSED: _ClassVar[FailureReport.Reason]
        OUT_OF_MEMORY: _ClassVar[FailureReport.Reason]
        DATA_UNREADABLE: _ClassVar[FailureReport.Reason]
        OTHER: _ClassVar[FailureReport.Reason]
    REASON_UNSPECIFIED: FailureReport.Reason
    DIVERGED: FailureReport.Reason
    COLLAPSED: FailureReport.Reason
    OUT_OF_MEMORY: FailureReport.Reason
    DATA_UNREADABLE: FailureReport.Reason
    OTHER: FailureReport.Reason
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    round: int
    reason: FailureReport.Reason
    detail: str
    def __init__(self, client_id: _Optional[str] = ..., round: _Optional[int] = ..., reason: _Optional[_Union[FailureReport.Reason, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class FailureReply(_message.Message):
    __slots__ = ("duplicate", "received", "expected")
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    received: int
    expected: int
    def __init__(self, duplicate: _Optional[bool] = ..., received: _Optional[int] = ..., expected: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("client_id", "round")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    round: int
    def __init__(self, client_id: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...
