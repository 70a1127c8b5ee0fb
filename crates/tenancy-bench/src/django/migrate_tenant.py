# Creates the first django-tenants schema tenant (schema creation and tenant migrations
# through django-tenants itself); the `migrate` benchmark clones it to the other schemas.
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproj.settings")
import django  # noqa: E402

django.setup()

from customers.models import Client  # noqa: E402

Client(schema_name=sys.argv[1], name="bench tenant 0").save(verbosity=0)
