from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class IntervalReport(_message.Message):
    __slots__ = ("run_id", "agent_index", "agent_id", "node_id", "seq", "start_unix_s", "end_unix_s", "status_counts", "latency_hdr", "send_lag_hdr", "in_flight", "dropped", "checked", "correct", "cpu_s", "load_model", "final", "target_rate", "sent", "warmup", "behind", "loop_lag_max_s", "arrival", "target")
    class StatusCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    STATUS_COUNTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_HDR_FIELD_NUMBER: _ClassVar[int]
    SEND_LAG_HDR_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    CPU_S_FIELD_NUMBER: _ClassVar[int]
    LOAD_MODEL_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    TARGET_RATE_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    WARMUP_FIELD_NUMBER: _ClassVar[int]
    BEHIND_FIELD_NUMBER: _ClassVar[int]
    LOOP_LAG_MAX_S_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    agent_index: int
    agent_id: str
    node_id: str
    seq: int
    start_unix_s: float
    end_unix_s: float
    status_counts: _containers.ScalarMap[str, int]
    latency_hdr: bytes
    send_lag_hdr: bytes
    in_flight: int
    dropped: int
    checked: int
    correct: int
    cpu_s: float
    load_model: str
    final: bool
    target_rate: float
    sent: int
    warmup: bool
    behind: bool
    loop_lag_max_s: float
    arrival: str
    target: float
    def __init__(self, run_id: _Optional[str] = ..., agent_index: _Optional[int] = ..., agent_id: _Optional[str] = ..., node_id: _Optional[str] = ..., seq: _Optional[int] = ..., start_unix_s: _Optional[float] = ..., end_unix_s: _Optional[float] = ..., status_counts: _Optional[_Mapping[str, int]] = ..., latency_hdr: _Optional[bytes] = ..., send_lag_hdr: _Optional[bytes] = ..., in_flight: _Optional[int] = ..., dropped: _Optional[int] = ..., checked: _Optional[int] = ..., correct: _Optional[int] = ..., cpu_s: _Optional[float] = ..., load_model: _Optional[str] = ..., final: _Optional[bool] = ..., target_rate: _Optional[float] = ..., sent: _Optional[int] = ..., warmup: _Optional[bool] = ..., behind: _Optional[bool] = ..., loop_lag_max_s: _Optional[float] = ..., arrival: _Optional[str] = ..., target: _Optional[float] = ...) -> None: ...
