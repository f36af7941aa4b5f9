// Daly's checkpoint interval and the expected run time (coord/checkpoint_plan),
// against the check values Daly published, and human durations.
#include <doctest/doctest.h>

#include <cmath>

#include "coord/checkpoint_plan.hpp"

using namespace vvmm;
using namespace vvmm::coord;

namespace {
Seconds minutes(double m) { return Seconds(60 * m); }
Seconds hours(double h) { return Seconds(3600 * h); }
}  // namespace

TEST_CASE("plan: Daly's higher-order interval matches his check values (δ = 5 min)")
{
    CHECK(daly_interval(minutes(5), hours(24)).count() / 60 == doctest::Approx(117).epsilon(0.005));
    CHECK(daly_interval(minutes(5), hours(6)).count() / 60 == doctest::Approx(57).epsilon(0.01));
    CHECK(daly_interval(minutes(5), minutes(15)).count() / 60 == doctest::Approx(9.1).epsilon(0.01));
    // δ ≥ 2M: checkpointing more often than failures happen is pointless: τ = M.
    CHECK(daly_interval(minutes(30), minutes(15)).count() == doctest::Approx(minutes(15).count()));
}

TEST_CASE("plan: expected completion — the optimum beats neighbours, checkpoints beat none on long runs")
{
    const FailureModel m{hours(3), minutes(5), minutes(2)};
    const Seconds work = hours(48);
    const Seconds tau = daly_interval(m.epoch_cost, m.mtbf);
    const double best = expected_completion(work, tau, m).count();
    CHECK(best > work.count());
    CHECK(best < expected_completion(work, tau * 0.5, m).count());
    CHECK(best < expected_completion(work, tau * 2.0, m).count());
    // 48 h of work, a failure every 3 h on average, no checkpoints: e^16 restarts' worth.
    const double none = expected_completion_without_checkpoints(work, m).count();
    CHECK(none == doctest::Approx(hours(3).count() * std::exp(2.0 / 180) * std::expm1(16.0)).epsilon(1e-9));
    CHECK(none > 1000 * best);
    // No failures to speak of: both tend to the work itself (plus the epochs' cost).
    const FailureModel rare{hours(1e6), Seconds(1), Seconds(0)};
    CHECK(expected_completion_without_checkpoints(hours(1), rare).count() == doctest::Approx(3600).epsilon(1e-3));
}

TEST_CASE("plan: the DVDC scenario — MTBF 3 h, a 48 h run, disk epochs of 5 min against diskless ones of 20 s")
{
    // Worked by hand from the formulas: disk τ = √(2·300·10800)·1.040827 − 300
    // = 2349.5 s and 10800·(e^(2649.5/10800) − 1)·172800/2349.5 = 220 848 s;
    // diskless τ = √(2·20·10800)·1.010246 − 20 = 644.0 s and 183 757 s.
    const Seconds work = hours(48);
    const FailureModel disk{hours(3), minutes(5), Seconds(0)};
    const FailureModel diskless{hours(3), Seconds(20), Seconds(0)};
    const Seconds disk_tau = daly_interval(disk.epoch_cost, disk.mtbf);
    const Seconds diskless_tau = daly_interval(diskless.epoch_cost, diskless.mtbf);
    CHECK(disk_tau.count() == doctest::Approx(2349.5).epsilon(1e-4));
    CHECK(diskless_tau.count() == doctest::Approx(644.0).epsilon(1e-4));
    const double with_disk = expected_completion(work, disk_tau, disk).count();
    const double with_diskless = expected_completion(work, diskless_tau, diskless).count();
    CHECK(with_disk == doctest::Approx(220848).epsilon(1e-4));       // 61.3 h
    CHECK(with_diskless == doctest::Approx(183757).epsilon(1e-4));   // 51.0 h
    // What diskless buys in this scenario: 10 of the 13 hours disk checkpoints lose.
    CHECK((with_disk - with_diskless) / 3600 == doctest::Approx(10.3).epsilon(0.01));
}

TEST_CASE("durations: units s, m, h, d; no unit, zero, negatives, garbage and overflow refused")
{
    CHECK(parse_duration("30s").value().count() == 30);
    CHECK(parse_duration("5m").value().count() == 300);
    CHECK(parse_duration("1.5h").value().count() == 5400);
    CHECK(parse_duration("2d").value().count() == 172800);
    CHECK(parse_duration("90").error().message() == "'90' has no unit (s, m, h or d, e.g. 30s, 5m, 3h, 2d)");
    CHECK(parse_duration("5min").error().message() == "'5min': unknown unit 'min' (s, m, h or d)");
    CHECK(parse_duration("h").error().message() == "'h' is not a duration (e.g. 30s, 5m, 3h, 2d)");
    CHECK(!parse_duration(""));
    CHECK(!parse_duration("0s"));
    CHECK(!parse_duration("-5m"));
    CHECK(!parse_duration("1e400s"));
    CHECK(parse_duration("101000d").error().message() == "'101000d' is out of range (more than 0, at most 100 years)");
    CHECK(format_duration(Seconds(45)) == "45 s");
    CHECK(format_duration(minutes(9.1)) == "9.1 min");
    CHECK(format_duration(hours(48)) == "48 h");
}
