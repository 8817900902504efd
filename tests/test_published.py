"""data/published.yml: the published numbers, their sources and AutoSourceID's table."""

from __future__ import annotations

import numpy as np
import yaml

from skyml import paths, published


def test_every_entry_has_its_source_definition_and_where():
    data = published.load()
    for name, source in data["sources"].items():
        assert source["short"] and source["what"] and source["cite"], name
        assert source.get("paper") or source.get("talk") or source.get("repository"), name
    for key, entry in data["entries"].items():
        assert entry.definition and entry.where and entry.citation, key
        assert entry.comparable in published.COMPARABLE, key
        if entry.comparable == "other":
            assert entry.differs, f"{key}: say how the published definition differs"


def test_only_published_numbers():
    raw = yaml.safe_load(published.FILE.read_text())
    for item in raw["published"]:
        text = " ".join(str(item.get(k, "")) for k in ("text", "where", "definition", "differs")).lower()
        assert "goal" not in text and "issue" not in text, item["metric"]
    throughput = published.for_metric("sec_per_map_talk_cnn")
    assert "gpu" not in throughput.text.lower() and "cpu" in throughput.definition.lower()


def test_autosourceid_rows_are_lower_edges_of_its_log_bins():
    bins = published.autosourceid_bins()
    edges = np.logspace(-12, -7, 20)
    three_figures = [float(f"{e:.2e}") for e in edges]  # the rows are printed with three figures
    assert list(bins["lower_edge"]) == three_figures[8:12]
    assert list(bins["upper_edge"][:3]) == three_figures[9:12] and np.isnan(bins["upper_edge"][3])
    # [2.34e-10, 4.28e-10): TP 931, FP 50, FN 123 at |b| > 20°; the all-sky pair is 0.93 / 0.74
    assert (bins["purity_hilat"][1], bins["completeness_hilat"][1]) == (round(931 / 981, 2), round(931 / 1054, 2))
    assert (bins["purity_all"][1], bins["completeness_all"][1]) == (0.93, 0.74)
    entry = published.for_metric("purity_hilat_asid_bin_2.34e-10_unet_kmeans")
    assert entry.value == bins["purity_hilat"][1]


def test_fermi_evaluation_uses_the_file():
    from skyml.fermi import evaluation

    for key, values in published.autosourceid_bins().items():
        np.testing.assert_array_equal(evaluation.AUTOSOURCEID[key], values)


def test_lhaaso_numbers_are_lhai_and_ctao_has_none():
    assert published.for_metric("psnr_cnn_lhai").source == "lhai"
    assert "LHAI" in published.for_metric("psnr_cnn_lhai").citation
    assert not [k for k in published.load()["entries"] if "above_sens" in k or "f1_" in k]
    assert [n["analysis"] for n in published.load()["not_published"]] == ["06_ctao_survey_detection"]


def test_file_is_in_the_repository():
    assert published.FILE == paths.ROOT / "data" / "published.yml" and published.FILE.is_file()
