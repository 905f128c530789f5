"""The Django admin as the notification-history tool: lists, filters, search, the
read-only detail page, the equipment pages, and a fixed number of queries per page
whatever the size of the log (the last test checks that on 100,000 rows; deselect it
with -k "not hundred_thousand")."""

import io
import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.html import escape

from notifications.admin import paginator as notification_paginator
from notifications.models import Notification
from stations.models import Box, Connector, Station

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/notifications/notification/"
_seq = itertools.count(1)


@pytest.fixture(autouse=True)
def equipment():
    # ST001..ST003, boxes ST00x-B1/-B2, connectors 1/2.
    call_command("demo_data", stations=3, stdout=io.StringIO())


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def notification(
    message_id,
    received_at,
    station="ST001",
    box=1,
    connector=1,
    fault_type="SYSTEM_ERROR",
    action="SYSTEM_DATA_CHANGED",
    message="Connector overheated",
    **fields,
) -> Notification:
    """An unsaved row; box/connector are numbers (None for a station-only event)."""
    station_row = Station.objects.get(code=station)
    box_row = Box.objects.get(code=f"{station}-B{box}") if box else None
    connector_row = Connector.objects.get(box=box_row, code=str(connector)) if connector else None
    payload = {"id": message_id, "stationId": station, "faultType": fault_type, "action": action}
    return Notification(
        station=station_row,
        box=box_row,
        connector=connector_row,
        seq=next(_seq),
        message_id=message_id,
        fault_type=fault_type,
        action=action,
        message=message,
        received_at=received_at,
        payload=payload,
        **fields,
    )


def many(count: int, start: datetime, span: timedelta) -> list[Notification]:
    """`count` rows over the three stations, four fault types and three actions, spread
    evenly from `start` over `span`; built in bulk (equipment looked up once)."""
    stations = list(Station.objects.order_by("code"))
    boxes = {s.pk: list(Box.objects.filter(station=s).order_by("code")) for s in stations}
    connectors = {b.pk: list(Connector.objects.filter(box=b)) for s in boxes.values() for b in s}
    faults = ["SYSTEM_ERROR", "OVER_TEMPERATURE", "GROUND_FAULT", "COMM_LOST"]
    actions = ["SYSTEM_DATA_CHANGED", "STATUS_CHANGED", "FAULT_RAISED"]
    rows = []
    for i in range(count):
        station = stations[i % 3]
        box = boxes[station.pk][(i // 3) % 2]
        message_id = f"bulk-{next(_seq):07d}"
        rows.append(
            Notification(
                station=station,
                box=box,
                connector=connectors[box.pk][(i // 6) % 2],
                seq=next(_seq),
                message_id=message_id,
                fault_type=faults[i % 4],
                action=actions[i % 3],
                message=f"Temperature reading {i} on {box.code}",
                received_at=start + span * i / max(count, 1),
                payload={"id": message_id, "stationId": station.code, "reading": i},
            )
        )
    return rows


def listed(response) -> list[str]:
    assert response.status_code == 200
    return [row.message_id for row in response.context["cl"].result_list]


def filter_choices(response, title: str) -> list[str]:
    cl = response.context["cl"]
    spec = next(spec for spec in cl.filter_specs if spec.title == title)
    return [choice["display"] for choice in spec.choices(cl)]


@pytest.fixture
def history():
    """Five rows across stations, boxes, types, actions and three days."""
    Notification.objects.bulk_create(
        [
            notification("evt-1", at(2025, 12, 24, 8), message="Connector overheated"),
            notification(
                "evt-2",
                at(2025, 12, 24, 9),
                station="ST002",
                fault_type="GROUND_FAULT",
                message="Ground fault on evt-1's neighbour",
            ),
            notification(
                "evt-10",
                at(2025, 12, 25, 7),
                box=2,
                connector=2,
                action="STATUS_CHANGED",
                message="Status changed",
            ),
            notification(
                "evt-100",
                at(2026, 1, 5, 12),
                station="ST002",
                box=None,
                connector=None,
                fault_type="COMM_LOST",
                message="Station offline",
            ),
            notification("evt-3", at(2025, 12, 24, 10), box=2, connector=1, message="Fan noise"),
        ]
    )


# --- the list -----------------------------------------------------------------------


def test_the_list_shows_the_newest_first(admin_client, history):
    response = admin_client.get(CHANGELIST)

    assert listed(response) == ["evt-100", "evt-10", "evt-3", "evt-2", "evt-1"]
    html = response.content.decode()
    assert "ST002-B1/1" in html  # the connector column (box/code)
    assert "Station offline" in html  # the message column


def test_a_station_filter_keeps_only_that_station(admin_client, history):
    st002 = Station.objects.get(code="ST002")

    assert listed(admin_client.get(CHANGELIST, {"station__id__exact": st002.pk})) == [
        "evt-100",
        "evt-2",
    ]


def test_a_box_filter_keeps_only_that_box(admin_client, history):
    box = Box.objects.get(code="ST001-B2")

    assert listed(admin_client.get(CHANGELIST, {"box__id__exact": box.pk})) == ["evt-10", "evt-3"]
    # Station-only events (no box) have their own choice.
    assert listed(admin_client.get(CHANGELIST, {"box__isnull": "True"})) == ["evt-100"]


def test_fault_type_and_action_filters_keep_only_matching_rows(admin_client, history):
    assert listed(admin_client.get(CHANGELIST, {"fault_type": "GROUND_FAULT"})) == ["evt-2"]
    assert listed(admin_client.get(CHANGELIST, {"action": "STATUS_CHANGED"})) == ["evt-10"]
    both = {"fault_type": "SYSTEM_ERROR", "action": "SYSTEM_DATA_CHANGED"}
    assert listed(admin_client.get(CHANGELIST, both)) == ["evt-3", "evt-1"]


def test_the_received_date_filter_and_the_date_hierarchy_narrow_to_a_day(admin_client, history):
    # As the filter's own links write them: aware midnights.
    day = {"received_at__gte": str(at(2025, 12, 24)), "received_at__lt": str(at(2025, 12, 25))}
    assert listed(admin_client.get(CHANGELIST, day)) == ["evt-3", "evt-2", "evt-1"]

    drill = {"received_at__year": "2025", "received_at__month": "12", "received_at__day": "25"}
    assert listed(admin_client.get(CHANGELIST, drill)) == ["evt-10"]


def hierarchy(response) -> list[str]:
    """The titles the date hierarchy offers on this page."""
    return [choice["title"] for choice in date_hierarchy(response.context["cl"])["choices"]]


def test_the_date_hierarchy_offers_only_periods_that_have_rows(admin_client, history):
    # The rows span two years: the top level lists those years.
    assert hierarchy(admin_client.get(CHANGELIST)) == ["2025", "2026"]

    year = admin_client.get(CHANGELIST, {"received_at__year": 2025})
    assert hierarchy(year) == ["December 2025"]

    month = admin_client.get(CHANGELIST, {"received_at__year": 2025, "received_at__month": 12})
    assert hierarchy(month) == ["December 24", "December 25"]
    assert listed(month) == ["evt-10", "evt-3", "evt-2", "evt-1"]

    # Filters narrow the periods offered too.
    st002 = Station.objects.get(code="ST002")
    assert hierarchy(admin_client.get(CHANGELIST, {"station__id__exact": st002.pk})) == [
        "2025",
        "2026",
    ]
    only_2026 = {"station__id__exact": st002.pk, "fault_type": "COMM_LOST"}
    assert hierarchy(admin_client.get(CHANGELIST, only_2026)) == ["January 5"]


def test_filter_choices_come_from_the_equipment_and_the_indexed_values(admin_client, history):
    response = admin_client.get(CHANGELIST)
    # ST003 has no notifications and is still offered (listed from the station table).
    assert filter_choices(response, "station") == [
        "All",
        "ST001 (Demo depot 1)",
        "ST002 (Demo depot 2)",
        "ST003 (Demo depot 3)",
    ]
    assert filter_choices(response, "fault type") == [
        "All",
        "COMM_LOST",
        "GROUND_FAULT",
        "SYSTEM_ERROR",
    ]
    assert filter_choices(response, "action") == ["All", "STATUS_CHANGED", "SYSTEM_DATA_CHANGED"]
    assert filter_choices(response, "box")[:3] == ["All", "ST001-B1", "ST001-B2"]

    # With a station chosen, the box filter offers that station's boxes only.
    st002 = Station.objects.get(code="ST002")
    response = admin_client.get(CHANGELIST, {"station__id__exact": st002.pk})
    assert filter_choices(response, "box") == ["All", "ST002-B1", "ST002-B2", "-"]


def test_box_codes_repeated_across_stations_name_their_station(admin_client, history):
    for code in ("ST001", "ST002"):
        Box.objects.create(station=Station.objects.get(code=code), code="SPARE")

    choices = filter_choices(admin_client.get(CHANGELIST), "box")

    assert "SPARE (ST001)" in choices and "SPARE (ST002)" in choices


def test_searching_an_exact_message_id_finds_exactly_that_row(admin_client, history):
    # "evt-1" is also a prefix of evt-10 and evt-100 and appears in evt-2's message.
    assert listed(admin_client.get(CHANGELIST, {"q": "evt-1"})) == ["evt-1"]
    assert listed(admin_client.get(CHANGELIST, {"q": " evt-100 "})) == ["evt-100"]


def test_searching_message_text_finds_the_rows_that_contain_it(admin_client, history):
    assert listed(admin_client.get(CHANGELIST, {"q": "overheated"})) == ["evt-1"]
    assert listed(admin_client.get(CHANGELIST, {"q": "OFFLINE"})) == ["evt-100"]
    # Not an id: the text search, which finds the id inside evt-2's message.
    assert listed(admin_client.get(CHANGELIST, {"q": "evt-1's"})) == ["evt-2"]
    assert listed(admin_client.get(CHANGELIST, {"q": "no such text"})) == []


def test_search_and_filters_combine(admin_client, history):
    st001 = Station.objects.get(code="ST001")
    params = {"station__id__exact": st001.pk, "q": "evt-100"}

    # evt-100 is ST002's: filtered out even though the id matches.
    assert listed(admin_client.get(CHANGELIST, params)) == []


def test_only_staff_reach_the_admin(client, django_user_model, history):
    user = django_user_model.objects.create_user("operator", password="pw-operator-1")
    client.force_login(user)

    response = client.get(CHANGELIST)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# --- queries per page -----------------------------------------------------------------


def queries_per_page(admin_client) -> dict[str, int]:
    """How many queries each kind of changelist page makes."""
    station = Station.objects.get(code="ST002").pk
    some_id = Notification.objects.order_by("pk").values_list("message_id", flat=True)[0]
    pages = {
        "unfiltered": {},
        "station": {"station__id__exact": station},
        "fault type": {"fault_type": "GROUND_FAULT"},
        "text search": {"q": "reading"},
        "id search": {"q": some_id},
        "month": {"received_at__year": 2025, "received_at__month": 12},
        "day": {"received_at__year": 2025, "received_at__month": 12, "received_at__day": 20},
    }
    counts = {}
    for name, params in pages.items():
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(CHANGELIST, params)
        assert response.status_code == 200, name
        counts[name] = len(queries)
    return counts


def test_the_number_of_queries_does_not_grow_with_the_rows(admin_client):
    # The same time span (two months over a year end), 30 and then 300 rows (more than
    # the 100 of a page, so the second list is paginated).
    Notification.objects.bulk_create(many(30, at(2025, 12, 1), timedelta(days=45)))
    few = queries_per_page(admin_client)
    Notification.objects.bulk_create(many(270, at(2025, 12, 1), timedelta(days=45)))
    more = queries_per_page(admin_client)

    assert few == more
    # Session, user, the four filters' choices, the count (PostgreSQL: its estimate
    # first), the page, and the date hierarchy's MIN, MAX and one probe query (none at
    # day level); an id search adds the id lookup (and is filtered: no estimate).
    assert max(more.values()) <= 12


def test_each_row_of_the_list_costs_no_query(admin_client, django_assert_max_num_queries):
    Notification.objects.bulk_create(many(100, at(2025, 12, 1), timedelta(days=3)))

    with django_assert_max_num_queries(12):
        response = admin_client.get(CHANGELIST)

    assert len(listed(response)) == 100


def test_an_estimated_count_pages_past_the_estimate_without_errors(admin_client, monkeypatch):
    """PostgreSQL's estimate path, on SQLite: the unfiltered list takes the estimate;
    filtered lists count exactly."""
    Notification.objects.bulk_create(many(150, at(2025, 12, 1), timedelta(days=3)))

    def estimate(queryset):
        return None if queryset.query.where else 120

    monkeypatch.setattr(notification_paginator, "estimated_row_count", estimate)

    response = admin_client.get(CHANGELIST)
    assert response.context["cl"].result_count == 120  # the estimate, not 150
    assert len(listed(response)) == 100
    # The estimate says one more page; it holds the 50 rows past the first 100,
    # not the 20 the estimate would cut it to.
    assert len(listed(admin_client.get(CHANGELIST, {"p": 2}))) == 50
    # A page past the real end is empty, not an error.
    assert listed(admin_client.get(CHANGELIST, {"p": 9})) == []

    st002 = Station.objects.get(code="ST002")
    filtered = admin_client.get(CHANGELIST, {"station__id__exact": st002.pk})
    assert filtered.context["cl"].result_count == 50


def test_filtered_lists_and_sqlite_get_no_estimate():
    station = Station.objects.get(code="ST001")
    filtered = Notification.objects.filter(station=station)
    assert notification_paginator.estimated_row_count(filtered) is None
    if connection.vendor == "sqlite":  # counts are cheap there (see paginator.py)
        assert notification_paginator.estimated_row_count(Notification.objects.all()) is None


# --- the detail page: read only --------------------------------------------------------


@pytest.fixture
def stored():
    row = notification(
        "evt-detail",
        at(2025, 12, 24, 8, 30),
        station="ST002",
        box=2,
        connector=1,
        code="E42",
        extra={"vendor": "acme"},
    )
    row.payload = {**row.payload, "firmwareBuild": "fw-7731-zeta", "nested": {"temp": 81}}
    row.save()
    return row


def detail_url(row) -> str:
    return reverse("admin:notifications_notification_change", args=[row.pk])


def test_the_detail_page_shows_the_raw_payload_and_every_field(admin_client, stored):
    response = admin_client.get(detail_url(stored))

    assert response.status_code == 200
    html = response.content.decode()
    # Pretty-printed JSON, escaped, in a <pre>.
    assert escape('"firmwareBuild": "fw-7731-zeta"') in html
    assert escape('"nested": {\n    "temp": 81\n  }') in html
    for shown in ("evt-detail", "E42", "SYSTEM_ERROR", "SYSTEM_DATA_CHANGED", "acme"):
        assert shown in html
    # Links to the station's and the box's admin pages.
    station_url = reverse("admin:stations_station_change", args=[stored.station_id])
    box_url = reverse("admin:stations_box_change", args=[stored.box_id])
    assert f'href="{station_url}"' in html
    assert f'href="{box_url}"' in html


def test_the_detail_page_has_no_save_and_refuses_changes(admin_client, stored):
    html = admin_client.get(detail_url(stored)).content.decode()
    assert 'name="_save"' not in html
    assert "deletelink" not in html

    response = admin_client.post(detail_url(stored), {"message": "rewritten", "fault_type": "X"})

    assert response.status_code == 403
    stored.refresh_from_db()
    assert stored.message == "Connector overheated" and stored.fault_type == "SYSTEM_ERROR"


def test_notifications_cannot_be_added_or_deleted_in_the_admin(admin_client, stored):
    assert admin_client.get("/admin/notifications/notification/add/").status_code == 403
    delete_url = reverse("admin:notifications_notification_delete", args=[stored.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    # No bulk "delete selected" action either.
    admin_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [stored.pk], "post": "yes"}
    )
    assert Notification.objects.filter(pk=stored.pk).exists()
    assert "delete_selected" not in admin_client.get(CHANGELIST).content.decode()


# --- equipment ------------------------------------------------------------------------------


def test_the_station_list_shows_box_counts_and_links_to_the_history(
    admin_client, django_assert_max_num_queries
):
    Box.objects.create(station=Station.objects.get(code="ST003"), code="ST003-B3")

    with django_assert_max_num_queries(6):
        response = admin_client.get("/admin/stations/station/")

    assert response.status_code == 200
    counts = {s.code: s.box_count for s in response.context["cl"].result_list}
    assert counts == {"ST001": 2, "ST002": 2, "ST003": 3}
    st001 = Station.objects.get(code="ST001")
    assert f"{CHANGELIST}?station__id__exact={st001.pk}" in response.content.decode()


def test_a_station_code_is_fixed_once_created(admin_client):
    st001 = Station.objects.get(code="ST001")
    response = admin_client.get(reverse("admin:stations_station_change", args=[st001.pk]))

    assert 'name="code"' not in response.content.decode()
    assert admin_client.get("/admin/stations/station/add/").status_code == 200


def test_a_box_page_lists_its_connectors_inline(admin_client, django_assert_max_num_queries):
    box = Box.objects.get(code="ST001-B1")

    with django_assert_max_num_queries(8):
        response = admin_client.get(reverse("admin:stations_box_change", args=[box.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "ST001-B1/1" in html and "ST001-B1/2" in html
    assert "connectors-TOTAL_FORMS" in html


def test_the_box_and_connector_lists_and_searches(admin_client):
    response = admin_client.get("/admin/stations/box/", {"q": "ST002"})
    assert {b.code for b in response.context["cl"].result_list} == {"ST002-B1", "ST002-B2"}
    assert {b.connector_count for b in response.context["cl"].result_list} == {2}

    response = admin_client.get("/admin/stations/connector/", {"q": "ST003-B2"})
    assert [str(c) for c in response.context["cl"].result_list] == ["ST003-B2/1", "ST003-B2/2"]


def test_equipment_with_history_is_not_deleted_and_the_page_says_why(
    admin_client, history, django_assert_max_num_queries
):
    st002 = Station.objects.get(code="ST002")
    url = reverse("admin:stations_station_delete", args=[st002.pk])

    with django_assert_max_num_queries(6):  # a count, not every notification
        page = admin_client.get(url)

    assert "2 notifications (prune them first" in page.content.decode()
    admin_client.post(url, {"post": "yes"})
    box = Box.objects.get(code="ST001-B2")
    bulk = admin_client.post(
        "/admin/stations/box/",
        {"action": "delete_selected", "_selected_action": [box.pk], "post": "yes"},
    )
    assert "2 notifications (prune them first" in bulk.content.decode()
    connector = Connector.objects.get(box__code="ST001-B1", code="1")
    admin_client.post(
        reverse("admin:stations_connector_delete", args=[connector.pk]), {"post": "yes"}
    )
    assert Station.objects.filter(pk=st002.pk).exists()
    assert Box.objects.filter(pk=box.pk).exists()
    assert Connector.objects.filter(pk=connector.pk).exists()


def test_equipment_without_history_is_deleted_as_usual(admin_client, history):
    st003 = Station.objects.get(code="ST003")  # no notifications
    url = reverse("admin:stations_station_delete", args=[st003.pk])

    assert "ST003-B1" in admin_client.get(url).content.decode()  # the usual list
    response = admin_client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not Station.objects.filter(pk=st003.pk).exists()
    assert not Box.objects.filter(code__startswith="ST003").exists()


# --- 100,000 rows -------------------------------------------------------------------------


def test_hundred_thousand_rows_keep_the_list_at_a_fixed_number_of_queries(
    admin_client, django_assert_max_num_queries
):
    """Deselect with -k "not hundred_thousand". Prints wall times; asserts none."""
    started = time.perf_counter()
    for chunk in range(20):  # 20 x 5,000 rows, six days each, in time order like a real log
        rows = many(5000, at(2025, 10, 1) + timedelta(days=6 * chunk), timedelta(days=6))
        Notification.objects.bulk_create(rows, batch_size=5000)
    assert Notification.objects.count() == 100_000
    print(f"\nbulk_create 100,000 rows: {time.perf_counter() - started:.1f} s")

    st002 = Station.objects.get(code="ST002")
    some_id = Notification.objects.values_list("message_id", flat=True)[50_000]
    pages = {
        "unfiltered": {},
        "station ST002": {"station__id__exact": st002.pk},
        "search by id": {"q": some_id},
        "search text": {"q": "reading 4242"},
        "drill-down 2025-12": {"received_at__year": 2025, "received_at__month": 12},
        "drill-down 2025-12-24": {
            "received_at__year": 2025,
            "received_at__month": 12,
            "received_at__day": 24,
        },
    }
    admin_client.get(CHANGELIST)  # a warm session and template cache, as in real use
    for name, params in pages.items():
        with django_assert_max_num_queries(12) as queries:
            page_started = time.perf_counter()
            response = admin_client.get(CHANGELIST, params)
            elapsed = time.perf_counter() - page_started
        assert response.status_code == 200
        assert response.context["cl"].result_list
        print(f"{name:>24}: {elapsed * 1000:6.0f} ms, {len(queries)} queries")
