"""scripts/bench_model.py: one call prints the test-path and training tables at tiny size on a CPU."""

import re

from scripts.bench_model import main


def table_rows(text: str, first_column: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_bench_prints_both_tables_with_ratios(capsys):
    assert main(["--tiny", "--device", "cpu", "--steps", "1", "--batch", "2", "--train_batch", "1",
                 "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("VLMDiff tiny (configs/tiny.yaml, random weights")
    tests = table_rows(out, "test path")
    assert [r[0] for r in tests] == ["reference-style: fp32, doubled guidance, extra decode", "fp32, batched",
                                     "bf16, batched", "bf16 + channels-last"]
    assert [r[1] for r in tests] == ["1", "2", "2", "2"]
    assert tests[0][3] == "1.00×" and all(r[4] == "n/a (CPU)" for r in tests)
    for name, batch, img_s, ratio, _ in tests:
        assert float(img_s) > 0 and re.fullmatch(r"\d+\.\d\d×", ratio)
    trains = table_rows(out, "training step")
    assert len(trains) == 6 and trains[0][4] == "1.00×"
    assert all(float(r[2]) > 0 for r in trains[:5])
    assert trains[5][5] == "not run: needs CUDA and bitsandbytes"
