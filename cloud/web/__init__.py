"""The web app: server-rendered pages for people (issue 19), beside the JSON API.

Pages call the same services as the API routes (no second copy of any rule); what is only
the web's lives here: cookie sessions over the account tokens (:mod:`cloud.web.websession`),
CSRF and security headers (:mod:`cloud.web.security`), rupees and IST times
(:mod:`cloud.web.format`), gettext catalogues (:mod:`cloud.web.i18n`), templates and static
files. docs/cloud.md ("Pages") lists the routes.
"""
