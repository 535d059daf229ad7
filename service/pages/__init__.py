"""Pages for people (SPEC §10): the consumer's app, the merchant's counter, the regulator's desk and the public
directory, server-rendered from Jinja2 templates with a little plain JavaScript (no build step).

`router` serves them; `web` holds what they share (languages, money formatting, sessions, CSRF, headers).
"""

from service.pages.router import router

__all__ = ["router"]
