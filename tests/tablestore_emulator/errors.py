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
}

DEFAULT_MESSAGES = {
    "OTSServerBusy": "Server is busy.",
    "OTSTimeout": "Operation timeout.",
    "OTSOperationThrottled": "Operation throttled.",
    "OTSNotEnoughCapacityUnit": "Remaining capacity unit is not enough.",
    "OTSInternalServerError": "Internal server error.",
    "OTSServerUnavailable": "Server is unavailable.",
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
