"""FakeMesh: components bound as `nerve run` binds them, driven by plain calls in a test, no router."""

from types import SimpleNamespace

import pytest
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer

from components import InvalidArgument, NerveError, NotFound, Unavailable, every, on, on_join, procedure
from components.testing import FakeMesh


def results_of(deferred):
    """What a Deferred fired with so far: [value], [Failure], or [] while it waits."""
    outcome = []
    deferred.addBoth(outcome.append)
    return outcome


class Watcher:
    """Subscribes with each match policy and keeps what each handler received."""

    def __init__(self):
        self.seen = {"exact": [], "prefix": [], "wildcard": []}

    @on("app.x.y")
    def exact(self, event, details):
        self.seen["exact"].append((details.topic, event))

    @on("app.", match="prefix")
    def prefix(self, event, details):
        self.seen["prefix"].append((details.topic, event))

    @on("app..y", match="wildcard")
    def wildcard(self, event, details):
        self.seen["wildcard"].append((details.topic, event))


def test_events_reach_the_handlers_whose_subscription_matches_like_the_router():
    watcher = Watcher()
    fake = FakeMesh.load(watcher)
    assert fake.deliver("app.x.y", 1) == 3
    assert fake.deliver("app.z.y", 2) == 2  # prefix and wildcard
    assert fake.deliver("app.x.y.z", 3) == 1  # a wildcard matches only as many components as it has
    assert fake.deliver("app.x", 4) == 1
    assert fake.deliver("other.x.y", 5) == 0
    assert watcher.seen == {"exact": [("app.x.y", 1)],
                            "prefix": [("app.x.y", 1), ("app.z.y", 2), ("app.x.y.z", 3), ("app.x", 4)],
                            "wildcard": [("app.x.y", 1), ("app.z.y", 2)]}


def test_event_details_carry_the_topic_the_publisher_fields_and_what_the_test_adds():
    received = []
    component = SimpleNamespace(handle=on("app.t")(lambda event, details: received.append(details)))
    fake = FakeMesh.load(component)
    fake.deliver("app.t", {}, publisher_authrole="tracker", hops=2)
    [details] = received
    assert (details.topic, details.publisher_authrole, details.hops) == ("app.t", "tracker", 2)
    assert details.publisher is None and details.publisher_authid is None and details.retained is None


def test_bad_events_are_counted_and_dropped_and_handler_bugs_counted_without_unsubscribing():
    counted = []

    @on("app.reading")
    def take_reading(reading):
        if not isinstance(reading, (int, float)):
            raise InvalidArgument(f"a reading is a number, not {type(reading).__name__}")
        counted.append(100 / reading)

    fake = FakeMesh.load(SimpleNamespace(take_reading=take_reading))
    fake.deliver("app.reading", "high")
    fake.deliver("app.reading", 0)  # a bug in the handler: division by zero
    fake.deliver("app.reading", 4)
    assert fake.mesh.dropped == {"app.reading": 1}
    assert fake.mesh.errors == {"take_reading": 1}
    assert counted == [25.0], "the subscription survives both"


class Inventory:
    stock = {"bolt": 3}

    @procedure("app.stock")
    def count(self, item):
        if not isinstance(item, str):
            raise InvalidArgument(f"item must be a string, got {type(item).__name__}")
        if item not in self.stock:
            raise NotFound(f"no item {item}")
        return self.stock[item]

    @procedure("app.broken")
    def broken(self):
        return {}["missing"]

    @procedure("app.refused")
    def refused(self):
        raise ApplicationError("app.error.closed", "closed on sundays")


def test_a_procedure_returns_its_result_or_raises_its_nerve_error_as_the_caller_gets_it():
    fake = FakeMesh.load(Inventory())
    assert fake.call("app.stock", "bolt") == 3
    assert fake.call("app.stock", item="bolt") == 3
    with pytest.raises(NotFound, match="^no item nut$"):
        fake.call("app.stock", "nut")
    with pytest.raises(InvalidArgument, match="item must be a string, got int"):
        fake.call("app.stock", 7)
    with pytest.raises(InvalidArgument, match="app.stock: missing a required argument: 'item'"):
        fake.call("app.stock")
    with pytest.raises(NerveError, match="app.broken failed inside the callee: KeyError") as raised:
        fake.call("app.broken")
    assert type(raised.value) is NerveError
    with pytest.raises(ApplicationError) as raised:
        fake.call("app.refused")
    assert raised.value.error == "app.error.closed"


def test_an_unknown_procedure_is_not_found_and_the_error_names_what_is_bound():
    fake = FakeMesh.load(Inventory())
    with pytest.raises(NotFound, match=r"no procedure app\.stocks is bound; bound: app\.broken, app\.refused, app\.stock"):
        fake.call("app.stocks", "bolt")
    with pytest.raises(NotFound, match="bound: none"):
        FakeMesh().call("app.stock")


class Pricer:
    """Asks another component for a rate, as a component calling across the mesh does."""

    @procedure("app.price")
    @defer.inlineCallbacks
    def price(self, amount, mesh):
        rate = yield mesh.call("app.rate", "EUR", timeout=2)
        return amount * rate


def test_calls_a_component_makes_are_recorded_and_answered_by_what_the_test_registered():
    fake = FakeMesh.load(Pricer())
    fake.answer("app.rate", lambda currency: {"EUR": 2}[currency])
    assert fake.call("app.price", 10) == 20
    fake.answer("app.rate", lambda currency: defer.succeed(3))
    assert fake.call("app.price", 10) == 30
    assert [(call.uri, call.args, call.kwargs) for call in fake.calls_made] == [("app.rate", ("EUR",), {})] * 2
    fake.answer("app.rate", lambda currency: defer.fail(Unavailable("no rates today")))
    with pytest.raises(Unavailable, match="no rates today"):
        fake.call("app.price", 10)


def test_a_call_left_unanswered_waits_for_the_test_to_fire_it():
    fake = FakeMesh.load(Pricer())
    pending = fake.call("app.price", 10)
    assert isinstance(pending, defer.Deferred)
    outcome = results_of(pending)
    assert outcome == []
    [call] = fake.calls_made
    assert call.uri == "app.rate" and call.args == ("EUR",) and not call.result.called
    call.result.callback(4)
    assert outcome == [40]


def test_a_call_that_fails_later_fails_with_the_nerve_error():
    fake = FakeMesh.load(Pricer())
    pending = fake.call("app.price", 10)
    fake.calls_made[0].result.errback(ApplicationError(NotFound.uri, "no rate for EUR"))
    [failure] = results_of(pending)
    assert failure.check(NotFound) and str(failure.value) == "no rate for EUR"


def test_advance_runs_each_timer_as_often_as_it_would_run_in_that_time():
    ticks = {"fast": 0, "slow": 0, "offline": 0, "flaky": 0}

    def counter(name):
        def count():
            ticks[name] += 1
            if name == "flaky":
                raise RuntimeError("a bad round")
        return count

    component = SimpleNamespace(fast=every(2)(counter("fast")), slow=every(5, now=False)(counter("slow")),
                                offline=every(3, offline=True)(counter("offline")), flaky=every(1)(counter("flaky")))
    fake = FakeMesh.load(component)
    assert ticks == {"fast": 1, "slow": 0, "offline": 1, "flaky": 1}, "timers with now=True run once when bound"
    fake.advance(10)
    assert ticks == {"fast": 6, "slow": 2, "offline": 4, "flaky": 11}
    fake.advance(0.5)
    assert ticks == {"fast": 6, "slow": 2, "offline": 4, "flaky": 11}
    assert fake.clock.seconds() == 10.5


def test_on_join_hooks_run_after_everything_is_bound():
    order = []
    component = SimpleNamespace(a_hook=on_join(lambda mesh: order.append(("joined", mesh.connected))),
                                z_timer=every(1)(lambda: order.append("tick")))
    FakeMesh.load(component)
    assert order == ["tick", ("joined", True)]


def loader(hold):
    """A component that loads its state at join from app.state (holding its events meanwhile, or not); each event
    is noted with the state it found."""
    order = []
    state = {}

    @defer.inlineCallbacks
    def load(mesh):
        state["value"] = yield mesh.call("app.state")
        order.append(("loaded", state["value"]))

    @on("app.add")
    def add(value):
        order.append(("event", value, state.get("value")))

    hook = on_join(hold_events=True)(load) if hold else on_join(load)
    return SimpleNamespace(load=hook, add=add), order


@pytest.mark.parametrize("hold", [True, False])
def test_a_hook_that_holds_events_sees_none_before_it_ends_and_they_come_in_order_after(hold):
    component, order = loader(hold)
    fake = FakeMesh.load(component)
    fake.deliver("app.add", 1)
    fake.deliver("app.add", 2)
    fake.calls_made[-1].result.callback("ready")
    if hold:
        assert order == [("loaded", "ready"), ("event", 1, "ready"), ("event", 2, "ready")]
    else:
        assert order == [("event", 1, None), ("event", 2, None), ("loaded", "ready")]
    # A reconnect holds them again until its hook has ended; a hook that fails hands them over all the same.
    fake.rejoin()
    fake.deliver("app.add", 3)
    fake.calls_made[-1].result.errback(ApplicationError(Unavailable.uri, "no state"))
    assert order[-1] == ("event", 3, "ready") and len(order) == 4


def test_settings_given_as_callables_are_resolved_with_the_config():
    seen = []
    component = SimpleNamespace(
        handle=on(lambda config: f"app.{config.name}.", match=lambda config: "prefix")(lambda event: seen.append(event)),
        tick=every(lambda config: config.period, now=False)(lambda: seen.append("tick")))
    fake = FakeMesh.load(component, config=SimpleNamespace(name="shop", period=3))
    assert fake.deliver("app.shop.sale", "sold") == 1
    fake.advance(3)
    assert seen == ["sold", "tick"]


class Greeter:
    """A class-based component that keeps its config and mesh."""

    def __init__(self, config, mesh):
        self.config, self.mesh = config, mesh

    @procedure("app.greet")
    def greet(self, name):
        self.mesh.publish("app.greeted", name)
        return f"{self.config.greeting}, {name}"


def test_a_class_component_built_on_the_fake_mesh_publishes_through_it():
    config = SimpleNamespace(greeting="hello")
    fake = FakeMesh(config)
    fake.bind(Greeter(config, fake.mesh))
    assert fake.call("app.greet", "ada") == "hello, ada"
    assert fake.published == [("app.greeted", "ada")]


def test_a_class_is_built_with_the_config_and_mesh_its_constructor_names():
    fake = FakeMesh.load(Greeter, config=SimpleNamespace(greeting="hi"))
    assert fake.call("app.greet", "bob") == "hi, bob" and fake.published_on("app.greeted") == ["bob"]

    class NoArguments:
        @procedure("app.ping")
        def ping(self):
            return "pong"

    assert FakeMesh.load(NoArguments).call("app.ping") == "pong"


def test_a_component_loads_from_a_py_path_fresh_each_time(tmp_path):
    source = tmp_path / "visits.py"
    source.write_text("from components import on, procedure\n"
                      "visits = []\n"
                      "@on('app.visit')\n"
                      "def visit(page):\n"
                      "    visits.append(page)\n"
                      "@procedure('app.visits')\n"
                      "def count():\n"
                      "    return len(visits)\n")
    fake = FakeMesh.load(str(source))
    fake.deliver("app.visit", "/home")
    assert fake.call("app.visits") == 1
    assert FakeMesh.load(source).call("app.visits") == 0, "a second load has its own module state"
    with pytest.raises(OSError, match="no such file"):
        FakeMesh.load(tmp_path / "missing.py")


def test_published_events_are_read_by_topic_or_prefix_in_order():
    fake = FakeMesh()
    fake.mesh.publish("app.a.1", {"n": 1})
    fake.mesh.publish("app.a", "exact")
    fake.mesh.publish("app.a.2", n=2)
    fake.mesh.publish("app.b", 1, 2)
    acknowledged = fake.mesh.publish("app.a.3", 3, acknowledge=True)
    assert fake.published_on("app.a.") == [{"n": 1}, {"n": 2}, 3]
    assert fake.published_on("app.a") == ["exact"]
    assert fake.published_on("app.b") == [(1, 2)]
    assert results_of(acknowledged) == [None]


def test_a_mesh_set_disconnected_drops_publishes_and_fails_calls_like_the_real_one():
    fake = FakeMesh()
    fake.mesh.connected = False
    assert fake.mesh.publish("app.a", 1) is None
    [failure] = results_of(fake.mesh.publish("app.a", 1, acknowledge=True))
    assert failure.value.error == Unavailable.uri
    [failure] = results_of(fake.mesh.call("app.rate"))
    assert failure.value.error == Unavailable.uri
    assert fake.published == [] and fake.calls_made == []


def test_binding_two_functions_to_one_procedure_is_refused():
    with pytest.raises(ValueError, match="app.greet is already registered"):
        FakeMesh.load(Greeter(None, None), Greeter(None, None))
