"""``python -m cloud.demo --site STATE/site.json [--scenario auto]`` (see cloud/demo/runner.py)."""

from cloud.demo.runner import main

main()
