"""factory-boy factories shared by every test folder."""

from __future__ import annotations

import datetime as dt

import factory
from django.contrib.auth.models import Group, User
from django.utils import timezone

from leadops import roles
from reps.models import Rep, Team, Territory, TimeOff, WorkingHours
from routing.models import Lead, Pool, PoolMembership


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    password = factory.django.Password("pw-secret-123")

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        if create and extracted:
            for name in extracted:
                self.groups.add(Group.objects.get_or_create(name=name)[0])


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Team {n}")


class TerritoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Territory
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Territory {n}")
    countries = factory.LazyFunction(lambda: ["DE"])


class RepFactory(factory.django.DjangoModelFactory):
    """A rep who is in the Reps group, active, and available at any hour unless given hours."""

    class Meta:
        model = Rep
        skip_postgeneration_save = True

    user = factory.SubFactory(UserFactory, groups=[roles.REPS])
    team = None
    level = Rep.Level.JUNIOR
    timezone = "UTC"

    @factory.post_generation
    def hours(self, create, extracted, **kwargs):
        # hours={0: ("09:00", "17:00"), ...}  weekday -> (start, end)
        if create and extracted:
            for weekday, (start, end) in extracted.items():
                WorkingHours.objects.create(
                    rep=self, weekday=weekday,
                    start=dt.time.fromisoformat(start), end=dt.time.fromisoformat(end),
                )


def weekday_hours(start: str = "09:00", end: str = "17:00") -> dict[int, tuple[str, str]]:
    return {d: (start, end) for d in range(5)}


class TimeOffFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TimeOff

    rep = factory.SubFactory(RepFactory)
    start = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(days=1))
    end = factory.LazyFunction(lambda: timezone.now() + dt.timedelta(days=1))


class PoolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Pool
        django_get_or_create = ("name",)
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"pool{n}")
    mode = Pool.Mode.CHERRY_PICK

    @factory.post_generation
    def members(self, create, extracted, **kwargs):
        if create and extracted:
            for rep in extracted:
                PoolMembership.objects.get_or_create(pool=self, rep=rep)


class LeadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Lead

    email = factory.Sequence(lambda n: f"lead{n}@customer.example")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    company = factory.Faker("company")
    country = "DE"
    company_size = 100
    source = "web"
    received_at = factory.LazyFunction(timezone.now)
