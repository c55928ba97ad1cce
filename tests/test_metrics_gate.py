"""The prompt gate: a prompt stays in the registry only when its pieces are recognisably its style."""

from notagen.metrics.gate import decisions

KEEP = "Baroque | Bach, Johann Sebastian | Choral"
DROP = "Classical | Haydn, Joseph | Chamber"


def report(instrumentation_probe: float, fit: float, valid: bool = True) -> dict:
    def per(value_keep: float, value_drop: float) -> dict:
        return {"per_prompt": {KEEP: {"la": value_keep, "n": 2}, DROP: {"la": value_drop, "n": 2}}}

    return {
        "label_accuracy": {"period": per(1.0, 0.9), "instrumentation": per(1.0, instrumentation_probe),
                           "composer": per(0.5, 0.0)},
        "theory": {"prompts": {KEEP: {"generated": {"metrics": {"instrumentation_fit": {"mean": 1.0}}}},
                               DROP: {"generated": {"metrics": {"instrumentation_fit": {"mean": fit}}}}}},
        "per_piece": [{"prompt": KEEP, "valid": True}, {"prompt": KEEP, "valid": True},
                      {"prompt": DROP, "valid": True}, {"prompt": DROP, "valid": valid}],
    }


def test_each_condition_can_drop_a_prompt_and_the_composer_probe_does_not():
    rows = decisions(report(0.9, 0.9), 0.8, 0.8)
    assert rows[KEEP]["kept"] and rows[DROP]["kept"]             # composer probes 0.5 / 0.0 do not decide
    assert not decisions(report(0.5, 0.9), 0.8, 0.8)[DROP]["kept"]
    assert not decisions(report(0.9, 0.0), 0.8, 0.8)[DROP]["kept"]  # SATB written for a string quartet prompt
    dropped = decisions(report(0.9, 0.9, valid=False), 0.8, 0.8)[DROP]
    assert not dropped["kept"] and dropped["valid"] == 0.5 and "strict-valid" in dropped["reasons"][0]
    assert decisions(report(0.9, 0.9), 0.8, 0.8)[KEEP]["n"] == 2
    folk = report(0.9, 0.9)
    folk["theory"]["prompts"][DROP] = {"generated": {"metrics": {"instrumentation_fit": {"mean": None}}},
                                       "real": {"metrics": {"instrumentation_fit": {"mean": None}}}}
    assert decisions(folk, 0.8, 0.8)[DROP]["kept"]                   # no ensemble to fit, in real tunes either
    folk["theory"]["prompts"][DROP]["real"]["metrics"]["instrumentation_fit"]["mean"] = 1.0
    assert not decisions(folk, 0.8, 0.8)[DROP]["kept"]               # real pieces have one: it must be found


def test_copying_more_often_than_real_pieces_or_repeating_patterns_drops_a_prompt():
    base = report(0.9, 0.9)
    base["memorisation"] = {"per_prompt": {KEEP: {"flagged_share": 0.1, "real_flagged_share": 0.5},
                                           DROP: {"flagged_share": 0.1, "real_flagged_share": 0.0}}}
    rows = decisions(base, 0.8, 0.8)
    assert rows[KEEP]["kept"]                                         # real chorales share melodies more often
    assert not rows[DROP]["kept"] and "memorised 0.10 > real held-out 0.00" in rows[DROP]["reasons"]
    base["memorisation"]["per_prompt"][DROP]["real_flagged_share"] = None
    assert decisions(base, 0.8, 0.8)[DROP]["kept"]                    # no real held-out pieces: not tested
    base["theory"]["prompts"][KEEP]["generated"]["metrics"]["distinct_patterns"] = {"mean": 0.9}
    rows = decisions(base, 0.8, 0.8)
    assert not rows[KEEP]["kept"] and "distinct 4-bar patterns 0.90 < 0.95" in rows[KEEP]["reasons"]
