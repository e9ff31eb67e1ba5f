"The findings registry decides each claim from runs paired by seed: synthetic studies with a known truth."
import numpy as np, pandas as pd, pytest
from artstudy.findings import FINDINGS, decide_findings, findings_markdown, get_finding, register_finding

SEEDS = [1, 2, 3, 4, 5]

def _runs(group, top1, seed_noise, **params):
    "One run per seed of `group` with `param_*` columns; top-1 = `top1` + a per-seed effect shared by every group."
    return [dict(run_id=f"{group}-{'-'.join(map(str, params.values()))}-s{s}", group=group, seed=s,
                 top1=top1 + seed_noise[s], **{f"param_{k}": v for k, v in params.items()}) for s in SEEDS]

@pytest.fixture
def study():
    "A study where the truth is known: Mode A +4 pts over off-the-shelf, +25 over scratch; double fine-tuning helps at 30/class only."
    rng = np.random.default_rng(0)
    noise = dict(zip(SEEDS, rng.normal(0, .03, len(SEEDS))))          # large, shared by every run of a seed: pairing removes it
    small = lambda: dict(zip(SEEDS, rng.normal(0, .003, len(SEEDS))))
    jit = lambda base, **p: [{**r, "top1": r["top1"] + e} for r, e in zip(_runs(**p, top1=base, seed_noise=noise), small().values())]
    rows = (jit(.50, group="transfer_modes", mode="mode_a") + jit(.25, group="transfer_modes", mode="from_scratch")
            + jit(.46, group="off_the_shelf", mode="off_the_shelf") + jit(.40, group="source", mode="fastai")[:1]
            + jit(.60, group="double_finetune", source_name="imagenet", n_per_class=10, mode="mode_a", dataset="pacs_art")
            + jit(.60, group="double_finetune", source_name="wikiart7", n_per_class=10, mode="double", dataset="pacs_art")
            + jit(.70, group="double_finetune", source_name="imagenet", n_per_class=30, mode="mode_a", dataset="pacs_art")
            + jit(.75, group="double_finetune", source_name="wikiart7", n_per_class=30, mode="double", dataset="pacs_art")
            + jit(.62, group="lr_ratio", lr_ratio=1.0, n_per_class=30, dataset="pacs_art"))
    df = pd.DataFrame(rows)
    df["mode"] = df.pop("param_mode") if "param_mode" in df else None
    df["dataset"] = df.get("param_dataset")
    return df

def test_paired_verdicts_match_the_truth(study):
    t = decide_findings(study).set_index(["finding", "condition"])
    assert t.loc[("F1", "wikiart7 style"), "verdict"] == "reproduced" and t.loc[("F1", "wikiart7 style"), "n"] == 5
    assert t.loc[("F1", "wikiart7 style"), "effect"] == pytest.approx(4, abs=1)
    assert t.loc[("F2", "wikiart7 style"), "verdict"] == "reproduced"
    assert t.loc[("F6", "pacs_art, 10 labelled images per class"), "verdict"] == "inconclusive"   # no true effect
    assert t.loc[("F6", "pacs_art, 30 labelled images per class"), "verdict"] == "reproduced"
    # F8a's ratio 0.1 point is double_finetune's ImageNet run at 30/class (run once, used twice): +8 pts over ratio 1
    r = t.loc[("F8a", "pacs_art, 30 per class: ratio 0.1 vs 1")]
    assert r.verdict == "reproduced" and r.effect == pytest.approx(8, abs=1)

def test_pairing_is_what_decides(study):
    "The shared per-seed noise (sd 3 pts) cancels in paired differences; mismatching the seeds of one side brings it back."
    s = study.copy()
    ots = s.group == "off_the_shelf"
    s.loc[ots, "seed"] = s.loc[ots, "seed"].map({1: 2, 2: 3, 3: 4, 4: 5, 5: 1})
    width = lambda d: float((d.ci_high - d.ci_low).iloc[0])
    paired, mismatched = decide_findings(study, pattern="F1"), decide_findings(s, pattern="F1")
    assert width(mismatched) > 3 * width(paired), (width(paired), width(mismatched))
    assert paired.p.iloc[0] < mismatched.p.iloc[0]

def test_one_deterministic_off_the_shelf_run_is_every_seeds_baseline(study):
    "F1 with the logistic head run once: a one-sample t-test of Mode A's per-seed top-1 minus that run's (scipy's)."
    from scipy import stats
    one = pd.concat([study[study.group != "off_the_shelf"], study[study.group == "off_the_shelf"].iloc[:1]])
    r = decide_findings(one, pattern="F1").iloc[0]
    a = study[(study.group == "transfer_modes") & (study["mode"] == "mode_a")].sort_values("seed").top1.to_numpy()
    d = (a - one[one.group == "off_the_shelf"].top1.iloc[0]) * 100
    assert r.n == 5 and r.effect == pytest.approx(d.mean()) and r.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert "one deterministic run" in r.evidence

def test_missing_grids_name_the_grid_to_run(study):
    t = decide_findings(study[study.group != "lr_ratio"]).set_index("finding")
    assert t.loc["F8a", "verdict"] == "not run" and "lr_ratio" in t.loc["F8a", "evidence"]
    assert t.loc["F3", "verdict"] == "not run" and "analysis" in t.loc["F3", "evidence"]

def test_per_layer_claims_read_the_bn_recalibrated_control():
    "F3: learned drift = 1 - CKA(control, fine-tuned), larger on top than at the bottom, per seed; raw CKA alone says nothing."
    rows = []
    for s in (1, 2, 3):
        for d in range(6):
            rows.append(dict(pair="imagenet_vs_mode_a", seed=s, layer=f"l{d}", depth=d,
                             cka=.6,                                # raw ImageNet vs fine-tuned: flat (BN recalibration everywhere)
                             cka_ctrl_b=1 - .02 * d - .005 * s,    # against the control: drift grows with depth
                             cka_a_ctrl=.6, overlap_mean=.4, overlap_chance=.08, entropy_change=-.01 * d + .001 * s))
    layers = pd.DataFrame(rows)
    res = pd.DataFrame([dict(run_id="a", group="analysis", seed=1)])
    t = decide_findings(res, layers).set_index("finding")
    assert t.loc["F3", "verdict"] == "reproduced" and t.loc["F3", "n"] == 3
    assert t.loc["F3", "effect"] == pytest.approx(.02 * 3, abs=1e-9)   # mean of layers 0-2 minus mean of layers 3-5
    assert t.loc["F5", "verdict"] == "reproduced"                       # entropy falls in the top layers
    flat = layers.assign(cka_ctrl_b=lambda d: 1 - .005 * d.seed)
    assert decide_findings(res, flat, pattern="F3").verdict.tolist() == ["inconclusive"]   # no drift: not "reversed"

def test_registry_refuses_duplicates_and_suggests_names():
    with pytest.raises(ValueError, match="already registered"):
        register_finding("F1", "again", "x", grids=())(lambda r, l: [])
    with pytest.raises(KeyError, match="did you mean"):
        get_finding("F8")
    assert len(FINDINGS) >= 11

def test_markdown_table_has_a_line_per_row(study):
    t = decide_findings(study)
    md = findings_markdown(t)
    assert md.count("\n") == len(t) + 1 and "**reproduced**" in md and "**not run**" in md
