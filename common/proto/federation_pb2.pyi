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
    __slots__ = ("federation_id", "total_rounds", "current_round", "model", "prompt_config_json", "spec", "classes_pending")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLASSES_PENDING_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    total_rounds: int
    current_round: int
    model: str
    prompt_config_json: str
    spec: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    classes_pending: bool
    def __init__(self, federation_id: _Optional[str] = ..., total_rounds: _Optional[int] = ..., current_round: _Optional[int] = ..., model: _Optional[str] = ..., prompt_config_json: _Optional[str] = ..., spec: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., classes_pending: _Optional[bool] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("client_id", "num_examples", "spec", "capabilities", "class_names", "signing_key")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    SIGNING_KEY_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    num_examples: int
    spec: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    signing_key: bytes
    def __init__(self, client_id: _Optional[str] = ..., num_examples: _Optional[int] = ..., spec: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., capabilities: _Optional[_Iterable[str]] = ..., class_names: _Optional[_Iterable[str]] = ..., signing_key: _Optional[bytes] = ...) -> None: ...

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
    __slots__ = ("action", "round", "total_rounds", "global_state", "global_sha256", "settings", "retry_after_s", "deadline_s", "secure")
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
    SECURE_FIELD_NUMBER: _ClassVar[int]
    action: TaskReply.Action
    round: int
    total_rounds: int
    global_state: bytes
    global_sha256: str
    settings: TrainSettings
    retry_after_s: float
    deadline_s: float
    secure: SecureRound
    def __init__(self, action: _Optional[_Union[TaskReply.Action, str]] = ..., round: _Optional[int] = ..., total_rounds: _Optional[int] = ..., global_state: _Optional[bytes] = ..., global_sha256: _Optional[str] = ..., settings: _Optional[_Union[TrainSettings, _Mapping]] = ..., retry_after_s: _Optional[float] = ..., deadline_s: _Optional[float] = ..., secure: _Optional[_Union[SecureRound, _Mapping]] = ...) -> None: ...

class SecureRound(_message.Message):
    __slots__ = ("run_id", "attempt", "sampled", "threshold", "length", "clip_range", "max_sites", "modulus_bits", "weight", "clip_norm", "noise_std", "clipped_tensors", "signed")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    CLIP_RANGE_FIELD_NUMBER: _ClassVar[int]
    MAX_SITES_FIELD_NUMBER: _ClassVar[int]
    MODULUS_BITS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    NOISE_STD_FIELD_NUMBER: _ClassVar[int]
    CLIPPED_TENSORS_FIELD_NUMBER: _ClassVar[int]
    SIGNED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    attempt: int
    sampled: _containers.RepeatedScalarFieldContainer[str]
    threshold: int
    length: int
    clip_range: float
    max_sites: int
    modulus_bits: int
    weight: float
    clip_norm: float
    noise_std: float
    clipped_tensors: _containers.RepeatedScalarFieldContainer[str]
    signed: bool
    def __init__(self, run_id: _Optional[str] = ..., attempt: _Optional[int] = ..., sampled: _Optional[_Iterable[str]] = ..., threshold: _Optional[int] = ..., length: _Optional[int] = ..., clip_range: _Optional[float] = ..., max_sites: _Optional[int] = ..., modulus_bits: _Optional[int] = ..., weight: _Optional[float] = ..., clip_norm: _Optional[float] = ..., noise_std: _Optional[float] = ..., clipped_tensors: _Optional[_Iterable[str]] = ..., signed: _Optional[bool] = ...) -> None: ...

class SecAggKeys(_message.Message):
    __slots__ = ("mask_public", "enc_public", "certificate", "signature")
    MASK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    ENC_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    mask_public: bytes
    enc_public: bytes
    certificate: bytes
    signature: bytes
    def __init__(self, mask_public: _Optional[bytes] = ..., enc_public: _Optional[bytes] = ..., certificate: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SecAggBundle(_message.Message):
    __slots__ = ("sender", "recipient", "ciphertext", "self_seed_digest", "mask_key_digest")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    SELF_SEED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_DIGEST_FIELD_NUMBER: _ClassVar[int]
    sender: str
    recipient: str
    ciphertext: bytes
    self_seed_digest: bytes
    mask_key_digest: bytes
    def __init__(self, sender: _Optional[str] = ..., recipient: _Optional[str] = ..., ciphertext: _Optional[bytes] = ..., self_seed_digest: _Optional[bytes] = ..., mask_key_digest: _Optional[bytes] = ...) -> None: ...

class SecAggShares(_message.Message):
    __slots__ = ("bundles",)
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.RepeatedCompositeFieldContainer[SecAggBundle]
    def __init__(self, bundles: _Optional[_Iterable[_Union[SecAggBundle, _Mapping]]] = ...) -> None: ...

class SecAggComplaint(_message.Message):
    __slots__ = ("accused", "reason", "evidence")
    ACCUSED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    accused: str
    reason: str
    evidence: bytes
    def __init__(self, accused: _Optional[str] = ..., reason: _Optional[str] = ..., evidence: _Optional[bytes] = ...) -> None: ...

class SecAggCheck(_message.Message):
    __slots__ = ("complaints", "signature")
    COMPLAINTS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    complaints: _containers.RepeatedCompositeFieldContainer[SecAggComplaint]
    signature: bytes
    def __init__(self, complaints: _Optional[_Iterable[_Union[SecAggComplaint, _Mapping]]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SecAggMasked(_message.Message):
    __slots__ = ("masked", "num_examples", "metrics")
    MASKED_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    masked: bytes
    num_examples: int
    metrics: Metrics
    def __init__(self, masked: _Optional[bytes] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Union[Metrics, _Mapping]] = ...) -> None: ...

class SecAggRevealedShare(_message.Message):
    __slots__ = ("dealer", "kind", "share")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[SecAggRevealedShare.Kind]
        SELF_SEED: _ClassVar[SecAggRevealedShare.Kind]
        MASK_KEY: _ClassVar[SecAggRevealedShare.Kind]
    KIND_UNSPECIFIED: SecAggRevealedShare.Kind
    SELF_SEED: SecAggRevealedShare.Kind
    MASK_KEY: SecAggRevealedShare.Kind
    DEALER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    dealer: str
    kind: SecAggRevealedShare.Kind
    share: bytes
    def __init__(self, dealer: _Optional[str] = ..., kind: _Optional[_Union[SecAggRevealedShare.Kind, str]] = ..., share: _Optional[bytes] = ...) -> None: ...

class SecAggReveal(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[SecAggRevealedShare]
    def __init__(self, shares: _Optional[_Iterable[_Union[SecAggRevealedShare, _Mapping]]] = ...) -> None: ...

class SecAggRequest(_message.Message):
    __slots__ = ("client_id", "round", "attempt", "keys", "shares", "masked", "reveal", "check", "max_wait_s", "run_id", "change_norms", "next_task_wait_s")
    class ChangeNormsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    REVEAL_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGE_NORMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    round: int
    attempt: int
    keys: SecAggKeys
    shares: SecAggShares
    masked: SecAggMasked
    reveal: SecAggReveal
    check: SecAggCheck
    max_wait_s: float
    run_id: str
    change_norms: _containers.ScalarMap[str, float]
    next_task_wait_s: float
    def __init__(self, client_id: _Optional[str] = ..., round: _Optional[int] = ..., attempt: _Optional[int] = ..., keys: _Optional[_Union[SecAggKeys, _Mapping]] = ..., shares: _Optional[_Union[SecAggShares, _Mapping]] = ..., masked: _Optional[_Union[SecAggMasked, _Mapping]] = ..., reveal: _Optional[_Union[SecAggReveal, _Mapping]] = ..., check: _Optional[_Union[SecAggCheck, _Mapping]] = ..., max_wait_s: _Optional[float] = ..., run_id: _Optional[str] = ..., change_norms: _Optional[_Mapping[str, float]] = ..., next_task_wait_s: _Optional[float] = ...) -> None: ...

class SecAggKeysAnnounced(_message.Message):
    __slots__ = ("keys",)
    class KeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SecAggKeys
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SecAggKeys, _Mapping]] = ...) -> None: ...
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.MessageMap[str, SecAggKeys]
    def __init__(self, keys: _Optional[_Mapping[str, SecAggKeys]] = ...) -> None: ...

class SecAggDelivered(_message.Message):
    __slots__ = ("senders", "bundles")
    SENDERS_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    senders: _containers.RepeatedScalarFieldContainer[str]
    bundles: _containers.RepeatedCompositeFieldContainer[SecAggBundle]
    def __init__(self, senders: _Optional[_Iterable[str]] = ..., bundles: _Optional[_Iterable[_Union[SecAggBundle, _Mapping]]] = ...) -> None: ...

class SecAggChecksPassed(_message.Message):
    __slots__ = ("checked", "attestations")
    class AttestationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    ATTESTATIONS_FIELD_NUMBER: _ClassVar[int]
    checked: _containers.RepeatedScalarFieldContainer[str]
    attestations: _containers.ScalarMap[str, bytes]
    def __init__(self, checked: _Optional[_Iterable[str]] = ..., attestations: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class SecAggUnmask(_message.Message):
    __slots__ = ("survivors", "dropped")
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    survivors: _containers.RepeatedScalarFieldContainer[str]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, survivors: _Optional[_Iterable[str]] = ..., dropped: _Optional[_Iterable[str]] = ...) -> None: ...

class SecAggReply(_message.Message):
    __slots__ = ("status", "keys", "shares", "unmask", "passed", "reason", "tensor_clips", "next_task")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[SecAggReply.Status]
        PENDING: _ClassVar[SecAggReply.Status]
        NEXT: _ClassVar[SecAggReply.Status]
        DONE: _ClassVar[SecAggReply.Status]
        ABANDONED: _ClassVar[SecAggReply.Status]
    STATUS_UNSPECIFIED: SecAggReply.Status
    PENDING: SecAggReply.Status
    NEXT: SecAggReply.Status
    DONE: SecAggReply.Status
    ABANDONED: SecAggReply.Status
    class TensorClipsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    UNMASK_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TENSOR_CLIPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_FIELD_NUMBER: _ClassVar[int]
    status: SecAggReply.Status
    keys: SecAggKeysAnnounced
    shares: SecAggDelivered
    unmask: SecAggUnmask
    passed: SecAggChecksPassed
    reason: str
    tensor_clips: _containers.ScalarMap[str, float]
    next_task: TaskReply
    def __init__(self, status: _Optional[_Union[SecAggReply.Status, str]] = ..., keys: _Optional[_Union[SecAggKeysAnnounced, _Mapping]] = ..., shares: _Optional[_Union[SecAggDelivered, _Mapping]] = ..., unmask: _Optional[_Union[SecAggUnmask, _Mapping]] = ..., passed: _Optional[_Union[SecAggChecksPassed, _Mapping]] = ..., reason: _Optional[str] = ..., tensor_clips: _Optional[_Mapping[str, float]] = ..., next_task: _Optional[_Union[TaskReply, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("client_id", "round", "reason", "detail", "attempt")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REASON_UNSPECIFIED: _ClassVar[FailureReport.Reason]
        DIVERGED: _ClassVar[FailureReport.Reason]
        COLLAPSED: _ClassVar[FailureReport.Reason]
        OUT_OF_MEMORY: _ClassVar[FailureReport.Reason]
        DATA_UNREADABLE: _ClassVar[FailureReport.Reason]
        OTHER: _ClassVar[FailureReport.Reason]
        PEER_REFUSED: _ClassVar[FailureReport.Reason]
    REASON_UNSPECIFIED: FailureReport.Reason
    DIVERGED: FailureReport.Reason
    COLLAPSED: FailureReport.Reason
    OUT_OF_MEMORY: FailureReport.Reason
    DATA_UNREADABLE: FailureReport.Reason
    OTHER: FailureReport.Reason
    PEER_REFUSED: FailureReport.Reason
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    round: int
    reason: FailureReport.Reason
    detail: str
    attempt: int
    def __init__(self, client_id: _Optional[str] = ..., round: _Optional[int] = ..., reason: _Optional[_Union[FailureReport.Reason, str]] = ..., detail: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

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
