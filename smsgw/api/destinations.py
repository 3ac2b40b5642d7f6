"""Phone fields in requests: parse once; refuse countries the client may not send to
(geo permissions, 403), destinations no provider serves (422) and bodies longer than every
provider serving the destination accepts (422)."""

from __future__ import annotations

from aiohttp import web

from smsgw.api.keys import GEO
from smsgw.api.problems import FieldError, Problem
from smsgw.app_keys import ROUTER
from smsgw.phone import InvalidPhoneNumber, PhoneNumber, parse_phone
from smsgw.segments import Segmentation

__all__ = ["DestinationErrors", "check_length", "parse_destination"]


class DestinationErrors:
    """Collects the problems of many phone fields, so a batch reports all of them at once."""

    def __init__(self) -> None:
        self.invalid: list[FieldError] = []
        self.forbidden: list[FieldError] = []
        self.unroutable: list[FieldError] = []
        self.too_long: list[FieldError] = []

    def raise_if_any(self) -> None:
        if self.invalid:
            raise Problem(
                400,
                "invalid-phone",
                "Invalid phone number",
                "one or more numbers cannot receive an SMS",
                errors=self.invalid + self.unroutable,
            )
        if self.forbidden:
            raise Problem(
                403,
                "country-not-allowed",
                "Destination country not allowed",
                "this client may not send to one or more of these countries",
                errors=self.forbidden,
            )
        if self.unroutable:
            raise Problem(
                422,
                "unroutable-destination",
                "Destination not served",
                "no configured provider serves this destination country",
                errors=self.unroutable,
            )
        if self.too_long:
            raise Problem(
                422,
                "body-too-long",
                "Body too long",
                "one or more bodies take more segments than the providers serving their "
                "destination accept",
                errors=self.too_long,
            )


def parse_destination(
    request: web.Request,
    client: str,
    raw: str,
    pointer: str,
    errors: DestinationErrors | None = None,
) -> PhoneNumber | None:
    """The parsed number; on a problem, record it in `errors` or (without) raise it now."""
    collected = errors or DestinationErrors()
    try:
        phone = parse_phone(raw)
    except InvalidPhoneNumber as exc:
        collected.invalid.append({"pointer": pointer, "detail": str(exc)})
        phone = None
    allowed = request.app[GEO].countries_for(client)
    if phone is not None and allowed and phone.country not in allowed:
        collected.forbidden.append(
            {"pointer": pointer, "detail": f"country {phone.country} is not allowed"}
        )
        phone = None
    if phone is not None and not request.app[ROUTER].serves(phone.country):
        collected.unroutable.append(
            {"pointer": pointer, "detail": f"no provider serves country {phone.country}"}
        )
        phone = None
    if errors is None:
        collected.raise_if_any()
    return phone


def check_length(
    request: web.Request,
    phone: PhoneNumber,
    segmentation: Segmentation,
    pointer: str,
    errors: DestinationErrors | None = None,
) -> bool:
    """Whether some provider serving the number takes a body this long; on a problem,
    record it in `errors` or (without) raise it now."""
    limit = request.app[ROUTER].max_segments(phone.country)
    if limit is None or segmentation.segments <= limit:
        return True
    collected = errors or DestinationErrors()
    collected.too_long.append(
        {
            "pointer": pointer,
            "detail": f"{segmentation.segments} segments ({segmentation.encoding}, "
            f"{segmentation.units} units); providers for {phone.country} take at most {limit}",
        }
    )
    if errors is None:
        collected.raise_if_any()
    return False
