# Times N tenant creations with django-tenants: Client(schema_name=...).save() creates the
# schema and runs the tenant migrations (auto_create_schema). Writes JSON to argv[2].
import importlib.metadata
import json
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproj.settings")
import django  # noqa: E402

django.setup()

from customers.models import Client  # noqa: E402

n = int(sys.argv[1])
out = sys.argv[2]
seconds = []
for i in range(n):
    started = time.perf_counter()
    Client(schema_name="bench_%04d" % i, name="bench tenant %d" % i).save(verbosity=0)
    seconds.append(time.perf_counter() - started)

with open(out, "w") as f:
    json.dump(
        {
            "django": django.__version__,
            "django_tenants": importlib.metadata.version("django-tenants"),
            "python": sys.version.split()[0],
            "seconds": seconds,
        },
        f,
    )
