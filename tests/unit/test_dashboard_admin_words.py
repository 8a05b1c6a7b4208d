"""The admin pages' own words for an API's refusal (no cloud needed)."""

from __future__ import annotations

from cumulo.dashboard.apis import ApiFailure
from cumulo.dashboard.pages.admin import Reworded, _access_refusal


def test_a_reworded_refusal_keeps_the_api_s_status_and_request_id_without_a_fix():
    nova = ApiFailure(
        "compute",
        409,
        "Flavor access already exists for flavor 42 and project p1 combination.",
        "req-abc",
    )
    # The API's own words get the usual fix for a taken name, wrong here.
    assert nova.explanation.endswith("Pick another name.")
    plain = Reworded(nova, _access_refusal(nova.message).format("demo"))
    assert (plain.service, plain.status, plain.request_id) == ("compute", 409, "req-abc")
    assert plain.explanation == "The project demo already has access to this flavor."


def test_only_nova_s_access_refusals_are_reworded():
    gone = "Flavor access not found for 42 / p1 combination."
    assert _access_refusal(gone).format("demo") == (
        "The project demo has no access to this flavor: nothing to remove."
    )
    assert _access_refusal("Can not add access to a public flavor.") is None
    assert _access_refusal("Flavor 42 could not be found.") is None
