"""The one URL redactor: base URLs in run.json and error messages, output locations."""

from uniedit_synth.core.redact import redact_url
from uniedit_synth.run.fs import redact_location


def test_userinfo_query_and_fragment_go_host_and_path_stay():
    assert redact_url("https://user:sk-secret@llm.local:8000/v1?api-key=k#x") == "https://***@llm.local:8000/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_url(None) is None and redact_url("") == "" and redact_url("runs/a") == "runs/a"


def test_locations_use_the_same_redactor():
    assert redact_location("s3://AKIA:secret@bucket/runs/x?endpoint_override=h:9") == "s3://***@bucket/runs/x"
