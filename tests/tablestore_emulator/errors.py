"""Service errors with the real Tablestore codes, messages and HTTP statuses."""

from __future__ import annotations

STATUS_BY_CODE = {
    "OTSParameterInvalid": 400,
    "OTSAuthFailed": 403,
    "OTSConditionCheckFail": 403,
    "OTSNotEnoughCapacityUnit": 403,
    "OTSOperationThrottled": 403,
    "OTSQuotaExhausted": 403,
    "OTSObjectNotExist": 404,
    "OTSObjectAlreadyExist": 409,
    "OTSRowOperationConflict": 409,
    "OTSInternalServerError": 500,
    "OTSServerBusy": 503,
    "OTSTimeout": 503,
    "OTSServerUnavailable": 503,
    "OTSPartitionUnavailable": 503,
    "OTSUnsupportOperation": 400,
    # Not in the error-code pages: the SDKs' retry lists name it; 503 like the other "try again soon" codes.
    "OTSTableNotReady": 503,
    "OTSTooFrequentReservedThroughputAdjustment": 403,
}

DEFAULT_MESSAGES = {
    "OTSServerBusy": "Server is busy.",
    "OTSTimeout": "Operation timeout.",
    "OTSOperationThrottled": "Operation throttled.",
    "OTSNotEnoughCapacityUnit": "Remaining capacity unit is not enough.",
    "OTSInternalServerError": "Internal server error.",
    "OTSServerUnavailable": "Server is not available.",
    "OTSPartitionUnavailable": "The partition is not available.",
    # The SDKs retry OTSQuotaExhausted only with exactly this message.
    "OTSQuotaExhausted": "Too frequent table operations.",
    "OTSTableNotReady": "The table is not ready.",
}


class OTSError(Exception):
    """Raised by store/search code; the server turns it into HTTP status + pb.Error body."""

    def __init__(self, code: str, message: str | None = None, status: int | None = None) -> None:
        self.code = code
        self.message = message if message is not None else DEFAULT_MESSAGES.get(code, code)
        self.status = status if status is not None else STATUS_BY_CODE.get(code, 400)
        super().__init__(f"{self.code}: {self.message}")


def invalid(message: str) -> OTSError:
    return OTSError("OTSParameterInvalid", message)


def table_not_exist() -> OTSError:
    return OTSError("OTSObjectNotExist", "Requested table does not exist.")
