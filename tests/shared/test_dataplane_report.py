"""The report a data plane writes to Redis (``shared.dataplane_report``): read back as written,
and bounded whatever a Redis writer makes it refuse."""

from __future__ import annotations

from shared.dataplane_report import MOST_REFUSALS, Identity, InstanceReport, Refusal, read_report


def as_stored(report: InstanceReport) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in report.fields().items()}


def test_a_report_reads_back_as_written():
    report = InstanceReport(Identity("bridge", "box", 12, 1_700_000_000.5), 1_700_000_100.25,
                            versions={"org_a": 3, "org_b": 1},
                            refused={"org_c": Refusal("wrong_org", "it names another org", 1_700_000_050.0)})
    assert read_report(as_stored(report)) == report


def test_a_flood_of_refusals_carries_only_the_latest_and_counts_the_rest():
    refused = {f"org_{n}": Refusal("unauthenticated", "its MAC does not verify", 1_700_000_000.0 + n)
               for n in range(MOST_REFUSALS + 50)}
    read = read_report(as_stored(InstanceReport(Identity("dataplane", "box", 1, 1.0), 2.0, refused=refused)))
    assert len(read.refused) == MOST_REFUSALS and read.refused_more == 50
    assert min(int(org.removeprefix("org_")) for org in read.refused) == 50  # the latest kept
