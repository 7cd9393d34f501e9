from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorResponse(BaseModel):
    """Every error answer: one readable sentence."""

    detail: str


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Bad request",
        401: "Not authenticated",
        403: "Only for members of ADMIN_GROUP",
        404: "Not found, or not yours",
        409: "Not allowed in the current state",
        413: "Too large",
        415: "Not a kind of content this route serves",
        429: "Too many failed logins",
        503: "A dependency is failing",
    }.items()
}
