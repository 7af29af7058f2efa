"""bench/accuracy.py judges issue 13's targets per survey: sdss asks both CNNs for 0.8x the forest,
hsc9 the multimodal CNN for 1.0x with eta and CRPS not worse; and it simulates the study's profile."""

from __future__ import annotations

from helpers import load_bench


def overall(sigma_mad: dict, eta: dict | None = None, crps: dict | None = None) -> dict:
    return {
        m: {"sigma_mad": sigma_mad[m], "eta": (eta or {}).get(m, 0.05), "crps": (crps or {}).get(m, 0.07)}
        for m in ("baseline", "multimodal", "forest")
    }


def boot(p: float) -> dict:
    return {"multimodal_vs_baseline": {"sigma_mad": {"p_value": p}}}


def test_sdss_needs_both_cnns_within_0_8_of_the_forest():
    targets = load_bench("accuracy").issue_targets
    both = targets("sdss", overall({"baseline": 0.0079, "multimodal": 0.0075, "forest": 0.010}), boot(0.01))
    assert both["cnn_vs_forest"]["met"] and both["multimodal_beats_baseline"]["met"]
    one = targets("sdss", overall({"baseline": 0.0085, "multimodal": 0.0075, "forest": 0.010}), boot(0.01))
    assert not one["cnn_vs_forest"]["met"] and not one["cnn_vs_forest"]["baseline_within"]


def test_hsc9_needs_the_multimodal_cnn_level_with_the_forest_and_no_worse_eta_or_crps():
    targets = load_bench("accuracy").issue_targets
    sig = {"baseline": 0.0193, "multimodal": 0.0197, "forest": 0.0199}
    level = targets("hsc9", overall(sig, eta={"multimodal": 0.047, "forest": 0.064}), boot(0.67))
    assert level["cnn_vs_forest"]["met"]  # 0.99x: enough on hsc9, not on sdss
    assert not level["multimodal_beats_baseline"]["met"]  # worse than the baseline, p = 0.67
    assert not targets("sdss", overall(sig), boot(0.67))["cnn_vs_forest"]["met"]
    more_outliers = targets("hsc9", overall(sig, eta={"multimodal": 0.07, "forest": 0.064}), boot(0.67))
    worse_crps = targets("hsc9", overall(sig, crps={"multimodal": 0.075, "forest": 0.074}), boot(0.67))
    assert not more_outliers["cnn_vs_forest"]["met"] and not worse_crps["cnn_vs_forest"]["met"]
    better_but_noisy = targets("hsc9", overall({**sig, "multimodal": 0.0190}), boot(0.2))
    assert not better_but_noisy["multimodal_beats_baseline"]["met"]  # lower, but p >= 0.05


def test_a_study_with_sed_variety_simulates_through_a_child_profile(tmp_path):
    from mmzcli.profiles import load_profile
    from mmzcli.sim.settings import SimSettings

    accuracy = load_bench("accuracy")
    for name, variety in (("sdss", 0.0), ("sdss", 0.3), ("hsc9", 0.3)):
        root = tmp_path / f"{name}-{variety}"
        root.mkdir()
        arg = accuracy.Study(root, {**accuracy.DEFAULTS, "profile": name, "sed_variety": variety}).profile_arg
        if not variety:
            assert arg == name  # the shipped profile, as before the setting existed
            continue
        profile = load_profile(arg)
        assert SimSettings.from_profile(profile).sed.variety == variety
        if name == "hsc9":  # the variety child extends the i <= 24 child
            assert profile.reference_mag_limit == accuracy.HSC9_MAG_LIMIT
