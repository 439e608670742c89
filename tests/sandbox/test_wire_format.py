"""An independent raw HTTP client checks the wire format against the Bot API documentation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.sandbox.conftest import USER, World, png


@pytest.fixture
async def http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{world.server.api_url}{world.bot.token}/") as client:
        yield client


def assert_error(response: httpx.Response, code: int, description: str) -> dict[str, Any]:
    """Telegram's error envelope: ok=false, error_code == HTTP status, exact description."""
    body: dict[str, Any] = response.json()
    assert response.status_code == code
    assert body["ok"] is False
    assert body["error_code"] == code
    assert body["description"] == description
    return body


async def test_success_envelope_and_message_fields(world: World, http: httpx.AsyncClient) -> None:
    await world.user_says("hi")
    response = await http.post(
        "sendMessage", json={"chat_id": USER, "text": "*hey*", "parse_mode": "MarkdownV2"}
    )
    body = response.json()
    assert response.status_code == 200 and body["ok"] is True
    message = body["result"]
    assert set(message) >= {"message_id", "from", "chat", "date", "text", "entities"}
    assert isinstance(message["message_id"], int) and isinstance(message["date"], int)
    assert message["from"] == {
        "id": world.bot.id,
        "is_bot": True,
        "first_name": "botbus",
        "username": "sandbox_test_bot",
    }
    assert message["chat"] == {"id": USER, "type": "private", "first_name": "User 1001"}
    assert message["entities"] == [{"type": "bold", "offset": 0, "length": 3}]


async def test_get_updates_wire_shape(world: World, http: httpx.AsyncClient) -> None:
    await world.client.send_text(
        world.bot.id,
        "/start",
        user={"id": 7, "first_name": "Eva", "username": "eva", "language_code": "es"},
    )
    body = (await http.get("getUpdates", params={"timeout": "0"})).json()
    (update,) = body["result"]
    assert set(update) == {"update_id", "message"}
    message = update["message"]
    assert message["from"] == {
        "id": 7,
        "is_bot": False,
        "first_name": "Eva",
        "username": "eva",
        "language_code": "es",
    }
    assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]


async def test_form_encoded_and_query_parameters_are_accepted(
    world: World, http: httpx.AsyncClient
) -> None:
    await world.user_says("hi")
    form = await http.post(
        "sendMessage",
        data={
            "chat_id": str(USER),
            "text": "form",
            "reply_markup": '{"inline_keyboard":[[{"text":"a","callback_data":"b"}]]}',
        },
    )
    assert form.json()["result"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "b"
    query = await http.get("sendMessage", params={"chat_id": str(USER), "text": "query"})
    assert query.json()["result"]["text"] == "query"


async def test_method_names_are_case_insensitive(http: httpx.AsyncClient) -> None:
    assert (await http.get("GETME")).json()["ok"] is True


async def test_multipart_photo_upload(world: World, http: httpx.AsyncClient) -> None:
    await world.user_says("hi")
    response = await http.post(
        "sendPhoto", data={"chat_id": str(USER)}, files={"photo": ("p.png", png(4, 3), "image/png")}
    )
    photo = response.json()["result"]["photo"]
    assert [(p["width"], p["height"]) for p in photo] == [(4, 3)]
    assert set(photo[0]) == {"file_id", "file_unique_id", "file_size", "width", "height"}


async def test_refusals_carry_telegrams_codes_and_texts(
    world: World, http: httpx.AsyncClient
) -> None:
    await world.user_says("hi")
    assert_error(
        await http.post("sendMessage", json={"text": "x"}), 400, "Bad Request: chat_id is empty"
    )
    assert_error(
        await http.post("sendMessage", json={"chat_id": 5, "text": "x"}),
        400,
        "Bad Request: chat not found",
    )
    assert_error(
        await http.post("sendMessage", json={"chat_id": USER}),
        400,
        "Bad Request: message text is empty",
    )
    assert_error(
        await http.post("sendMessage", json={"chat_id": USER, "text": "y" * 5000}),
        400,
        "Bad Request: message is too long",
    )
    assert_error(
        await http.post(
            "sendMessage", json={"chat_id": USER, "text": "<b>x", "parse_mode": "HTML"}
        ),
        400,
        "Bad Request: can't parse entities: Can't find end tag corresponding to start tag b",
    )
    markup = {"inline_keyboard": [[{"text": "x", "callback_data": "d" * 65}]]}
    assert_error(
        await http.post("sendMessage", json={"chat_id": USER, "text": "x", "reply_markup": markup}),
        400,
        "Bad Request: BUTTON_DATA_INVALID",
    )
    assert_error(
        await http.post(
            "sendMessage", json={"chat_id": USER, "text": "x", "reply_markup": "{nope"}
        ),
        400,
        "Bad Request: can't parse reply keyboard markup JSON object",
    )
    assert_error(
        await http.post(
            "editMessageText", json={"chat_id": USER, "message_id": "abc", "text": "x"}
        ),
        400,
        'Bad Request: field "message_id" must be of type Integer',
    )
    assert_error(await http.post("launchRocket"), 404, "Not Found")
    await world.client.block(world.bot.id, USER)
    assert_error(
        await http.post("sendMessage", json={"chat_id": USER, "text": "x"}),
        403,
        "Forbidden: bot was blocked by the user",
    )


async def test_not_modified_text(world: World, http: httpx.AsyncClient) -> None:
    await world.user_says("hi")
    sent = (await http.post("sendMessage", json={"chat_id": USER, "text": "same"})).json()
    edit = {"chat_id": USER, "message_id": sent["result"]["message_id"], "text": "same"}
    assert_error(
        await http.post("editMessageText", json=edit),
        400,
        "Bad Request: message is not modified: specified new message content and reply markup are"
        " exactly the same as a current content and reply markup of the message",
    )


async def test_junk_bodies_get_400_never_a_traceback(http: httpx.AsyncClient) -> None:
    junk = await http.post(
        "sendMessage", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(junk, 400, "Bad Request: can't parse JSON object")
    array = await http.post("sendMessage", json=[1, 2])
    assert array.status_code == 400 and array.json()["ok"] is False
    binary = await http.post(
        "sendMessage",
        content=b"\xff\xfe\x00",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert binary.status_code == 400 and binary.json()["ok"] is False
    wrong_type = await http.post("sendMessage", json={"chat_id": {"id": 1}, "text": "x"})
    assert wrong_type.status_code == 400 and wrong_type.json()["ok"] is False
    # the server is still fine afterwards
    assert (await http.get("getMe")).json()["ok"] is True


async def test_unknown_token_and_unknown_path(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.server.base_url) as raw:
        assert_error(await raw.get("/bot1:nope/getMe"), 401, "Unauthorized")
        assert_error(await raw.get("/somewhere/else"), 404, "Not Found")


async def test_too_many_requests_envelope(world: World, http: httpx.AsyncClient) -> None:
    await world.client.set_limits(enabled=True, chat_burst=1, chat_per_second=1)
    await world.user_says("hi")
    assert (await http.post("sendMessage", json={"chat_id": USER, "text": "1"})).status_code == 200
    body = assert_error(
        await http.post("sendMessage", json={"chat_id": USER, "text": "2"}),
        429,
        "Too Many Requests: retry after 1",
    )
    assert body["parameters"] == {"retry_after": 1}
