"""The fuzzer's view of the one rule the OpenAPI document cannot state.

A request must name a language installed on the node, and a version range
that one of its installed versions satisfies (else 400 unknown_language, or
Piston's 400 "<language>-<version> runtime is unknown"). Which languages and
versions a node has is known only at run time, from GET /api/v1/languages of
the server under test, so this hook completes the loaded document with it
before schemathesis builds its strategies:

- `LanguageName` (sessions; and `language` of runs and Piston executes) gets
  an `enum` of every installed id and alias;
- `version` of runs and Piston executes gets an `enum` of the ranges every
  installed language satisfies (`*` and `latest`; for runs also `""` and
  null, which mean the same there).

Positive cases then name installed languages, and a refusal of one is a real
finding; negative cases name anything else. Nothing else of the document is
changed, and a document that already carries these enums is left alone.
"""

import json
import os
import urllib.request

import schemathesis


def _installed():
    url = os.environ["EVALD_FUZZ_URL"].rstrip("/") + "/api/v1/languages"
    request = urllib.request.Request(url, headers={"X-Api-Key": os.environ["EVALD_FUZZ_API_KEY"]})
    with urllib.request.urlopen(request, timeout=30) as response:
        languages = json.load(response)
    # Interpreted languages first: the coverage phase builds its cases around
    # the first value, and a compiler under the smallest limits takes its
    # whole wall limit for each of them.
    languages.sort(key=lambda language: language["compiled"])
    names = []
    for language in languages:
        for name in [language["id"], *language["aliases"]]:
            if name not in names:
                names.append(name)
    if not names:
        raise RuntimeError("the server under test has no installed language")
    return names


@schemathesis.hook
def before_load_schema(context, raw_schema):
    schemas = raw_schema.get("components", {}).get("schemas", {})
    if "LanguageName" not in schemas or "enum" in schemas["LanguageName"]:
        return
    names = _installed()
    schemas["LanguageName"]["enum"] = names
    run = schemas["RunRequest"]["properties"]
    run["version"]["enum"] = [None, "", "*", "latest"]
    piston = schemas["PistonExecuteRequest"]["properties"]
    piston["language"]["enum"] = names
    piston["version"]["enum"] = ["*", "latest"]
