"""The development world (``make demo``): the demo sites' devices and listings
(:mod:`cloud.demo.site`), the seeded city (:mod:`cloud.demo.city`), the TCP relay that plays a
site's uplink (:mod:`cloud.demo.link`), the unattended story (:mod:`cloud.demo.story`) and the
supervisor that runs it all (:mod:`cloud.demo.runner`).

Nothing here is imported by the API or the workers: it is development tooling that talks to
the running cloud over HTTP like any client.
"""

from cloud.demo.site import DEMO_HOST_EMAIL, seed_demo_site

__all__ = ["DEMO_HOST_EMAIL", "seed_demo_site"]
