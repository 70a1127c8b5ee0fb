# Settings of the generated django-tenants project used as the `provision` baseline.
# Connection settings come from the environment (set by the Rust benchmark).
import os

SECRET_KEY = "tenancy-bench-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SHARED_APPS = [
    "django_tenants",
    "customers",
    "django.contrib.contenttypes",
]
TENANT_APPS = [
    "tenantapp",
]
INSTALLED_APPS = list(SHARED_APPS) + [a for a in TENANT_APPS if a not in SHARED_APPS]

TENANT_MODEL = "customers.Client"
TENANT_DOMAIN_MODEL = "customers.Domain"
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
MIDDLEWARE = []

DATABASES = {
    "default": {
        "ENGINE": "django_tenants.postgresql_backend",
        "NAME": os.environ["BENCH_DB_NAME"],
        "USER": os.environ["BENCH_DB_USER"],
        "PASSWORD": os.environ["BENCH_DB_PASSWORD"],
        "HOST": os.environ["BENCH_DB_HOST"],
        "PORT": os.environ["BENCH_DB_PORT"],
    }
}
