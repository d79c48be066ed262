"""Schemathesis hooks for the negative pass of `api_schema.rs` (SCHEMATHESIS_HOOKS).

The negative pass must send invalid requests only, so that "nothing was written" can be
checked on the whole Raft log. Schemathesis's coverage phase also sends every operation with a
`Content-Type: multipart/form-data` header that has no boundary, and counts it as invalid data.
On an operation without a request body that header describes nothing: the request is a valid
one (the server reads no body and ignores it), and may rightly write (e.g. a join). Those cases
are dropped here; on operations with a body the probe stays (the server refuses it with 415).
Written for schemathesis 4.32.5 (`coverage_scenario` is its own helper).
"""

import schemathesis
from schemathesis.generation.meta import CONTENT_TYPE_PROBES, coverage_scenario


@schemathesis.hook
def filter_case(context, case):
    return not (coverage_scenario(case) in CONTENT_TYPE_PROBES and not case.operation.body)
