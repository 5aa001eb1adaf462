"""The viewer's Content-Security-Policy, written here only. The app sends it on every answer
(the login and password pages the stricter LOGIN_CSP) and nginx passes the app's header through; the nginx
role's ``nginx_viewer_csp`` (what nginx puts on the answers it makes itself: a 429, a 413, a
502 while the viewer is down) is this CSP, which tests/roles/test_nginx_csp.py checks."""

from labstats.export import CSP as EXPORT_CSP

# Bokeh needs 'unsafe-eval' (it compiles chart callbacks) and inline styles; no inline
# scripts are used: chart specs are JSON data blocks.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The login and password pages draw no chart and load no pictures: no 'unsafe-eval', nothing
# but 'self'.
LOGIN_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


# A read-only link (/s/<token>) is the one-file export (labstats.export): BokehJS and the chart
# script inline, pictures as data: URLs, nothing from anywhere (not even this viewer), so the
# export's own policy, which the file carries too, and no framing. Only on /s/: every other
# page keeps inline scripts forbidden.
# A link's page runs in a sandbox of its own (an opaque origin): even a script that got into it
# could not read the viewer's cookies or call its API as the viewer's origin.
SHARE_CSP = (
    f"{EXPORT_CSP}; frame-ancestors 'none'; "
    "sandbox allow-scripts allow-downloads allow-popups allow-popups-to-escape-sandbox"
)

FORM_ENDPOINTS = {"auth.login", "auth.password"}
SHARE_ENDPOINTS = {"share.open"}


def policy_for(endpoint: str | None) -> str:
    """The policy of an answer of ``endpoint`` (a Flask endpoint name)."""
    if endpoint in SHARE_ENDPOINTS:
        return SHARE_CSP
    return LOGIN_CSP if endpoint in FORM_ENDPOINTS else CSP
