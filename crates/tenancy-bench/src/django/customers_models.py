from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Client(TenantMixin):
    name = models.CharField(max_length=100)
    created_on = models.DateField(auto_now_add=True)
    # Creating a Client creates its schema and runs the tenant apps' migrations in it.
    auto_create_schema = True


class Domain(DomainMixin):
    pass
