"""Real models on a GPU, as far as a CPU can check them: device resolution, precision, the CPU path's
numbers, LoRA TTT with its anchors (real TRL runs on tiny models), micro-batches, the vLLM and device
refusals, the gpu sweep preset, and the prepared device check at a tiny size."""

import copy
import importlib.util
import json
import math
import re

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback
from typer.testing import CliRunner

from catalyst_ttt.cli import app
from catalyst_ttt.config import compose_cell
from catalyst_ttt.device import VLLM_MISSING, precision_args, resolve_device, uses_bf16
from catalyst_ttt.errors import UserError
from catalyst_ttt.generation import generate
from catalyst_ttt.gpu_check import run_check
from catalyst_ttt.models import char_tokenizer, load_pretrained, new_tiny_model, save_checkpoint, with_lora
from catalyst_ttt.regimes import REGIMES
from catalyst_ttt.schema import LoraConfigSchema, ModelConfig
from catalyst_ttt.sweep import SWEEPS_DIR, load_sweep
from catalyst_ttt.training import StepHook, sft
from helpers.cells import SPLITS, TASK, run
from helpers.gsm8k_data import gsm8k_rows, write_jsonl
from helpers.ttt import QUICK_TTT, run_grpo

HAS_CUDA = torch.cuda.is_available()

# -- device and precision ----------------------------------------------------------------


@pytest.fixture
def matmul_precision():
    """Resolving to CUDA turns TF32 on for the process: put it back."""
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


def test_auto_picks_cuda_only_where_torch_sees_it(monkeypatch, matmul_precision):
    assert resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda"
    assert torch.get_float32_matmul_precision() == "high"  # TF32 matmuls on the GPU
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device("cpu") == "cpu"
    with pytest.raises(UserError, match="device=cuda but torch sees no CUDA device here"):
        resolve_device("cuda")


def test_vllm_is_refused_with_one_line_where_it_cannot_run(monkeypatch):
    with pytest.raises(UserError, match="ttt.use_vllm=true needs a GPU and this cell runs on the CPU"):
        resolve_device("cpu", use_vllm=True)
    if importlib.util.find_spec("vllm") is None:  # on a GPU machine without vLLM, as every machine for now
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        with pytest.raises(UserError, match=re.escape(VLLM_MISSING)):
            resolve_device("auto", use_vllm=True)


@pytest.mark.parametrize("bf16_supported", [True, False])
def test_a_gpu_trains_in_bf16_where_it_can_and_the_cpu_as_before(monkeypatch, bf16_supported):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    assert precision_args("cuda") == {"bf16": bf16_supported}  # use_cpu is left to its default, False
    assert uses_bf16(torch.device("cuda", 0)) is bf16_supported
    assert precision_args("cpu") == {"use_cpu": True, "bf16": False}  # the CPU path's arguments, as before
    assert uses_bf16("cpu") is False


class _Losses(TrainerCallback):
    def __init__(self):
        self.values = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in (logs or {}):
            self.values.append(logs["loss"])


def test_the_cpu_path_trains_exactly_as_before():
    """SFT on the CPU, as `device=auto` trains it here: the per-step losses and the weights match what
    this code gave before devices were configurable (commit eb0c583)."""
    if HAS_CUDA:
        pytest.skip("the CPU path: this machine resolves device=auto to CUDA")
    tokenizer = char_tokenizer()
    model = new_tiny_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), tokenizer, 0)
    model.to(resolve_device("auto"))
    rows = REGIMES.get("correct")(SPLITS["train"][:32], TASK, None, 0)
    losses = _Losses()
    sft(
        model,
        tokenizer,
        Dataset.from_list(rows),
        steps=6,
        batch_size=8,
        lr=1e-3,
        seed=0,
        max_length=96,
        callbacks=[losses],
    )
    before = [
        4.59589147567749,
        4.552680015563965,
        4.4942169189453125,
        4.476651668548584,
        4.429574012756348,
        4.401042938232422,
    ]
    assert losses.values == pytest.approx(before, rel=1e-5)
    weights = [p.detach().double() for p in model.parameters()]
    assert sum(float(w.sum()) for w in weights) == pytest.approx(154.8507413555335, rel=1e-5)
    assert sum(float(w.abs().sum()) for w in weights) == pytest.approx(542.4056590956925, rel=1e-5)


def test_a_checkpoints_sampling_defaults_do_not_reach_the_evaluation(taught):
    """Instruct checkpoints ship generation defaults (Qwen2.5: repetition_penalty 1.05, top_k 20, ...):
    the evaluation decodes the model's own distribution, as TRL's GRPO samples it."""
    model, tokenizer = taught
    prompts = [p.prompt for p in SPLITS["id"]]
    budget, batch = TASK.max_completion_chars, 4 * len(prompts)
    plain = generate(model, tokenizer, prompts, budget, batch_size=batch)
    model.generation_config.update(repetition_penalty=3.0, top_k=1, top_p=0.1, temperature=0.01)
    assert generate(model, tokenizer, prompts, budget, batch_size=batch) == plain
    sampled = generate(model, tokenizer, prompts, budget, batch_size=batch, samples=4, seed=0)
    model.generation_config = type(model.generation_config)()
    assert generate(model, tokenizer, prompts, budget, batch_size=batch, samples=4, seed=0) == sampled


# -- refusals: one line, exit 2 ------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["device=gpu"], "device='gpu' is not valid; valid: auto, cpu, cuda"),
        (["device=cpu", "ttt.use_vllm=true"], "ttt.use_vllm=true needs a GPU; vLLM never runs on the CPU"),
        (["signal=self_sft", "ttt.use_vllm=true"], "ttt.use_vllm=true generates for GRPO, which signal self_sft"),
        (["ttt.micro_batch_size=48"], "ttt.micro_batch_size=48 is not valid; it must divide the 128 sequences"),
        (["ttt.micro_batch_size=0"], "ttt.micro_batch_size=0 is not valid; it must be >= 1"),
        (["ttt.lora.r=-1"], "ttt.lora.r=-1 is not valid; it must be >= 0"),
        (["ttt.lora.dropout=1.5"], "ttt.lora.dropout=1.5 is not valid; it must be finite and >= 0 and <= 1"),
        (["ttt.lora.rank=8"], "unknown key 'ttt.lora.rank'; valid keys of ttt.lora: r, alpha, dropout"),
    ],
)
def test_bad_device_options_are_one_line_user_errors(overrides, says):
    with pytest.raises(UserError, match=re.escape(says)) as caught:
        compose_cell(overrides)
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(HAS_CUDA, reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "args, says",
    [
        (["device=cuda"], "error: device=cuda but torch sees no CUDA device here; use device=auto or device=cpu"),
        (["ttt.use_vllm=true"], "error: ttt.use_vllm=true needs a GPU and this cell runs on the CPU"),
    ],
)
def test_asking_for_a_gpu_without_one_exits_2_with_one_line(tmp_path, monkeypatch, args, says):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["run", *args, f"runs_dir={tmp_path / 'runs'}"], terminal_width=400)
    assert done.exit_code == 2, done.output
    assert done.stderr.strip().startswith(says) and len(done.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "runs").glob("*/*/result.json"))  # refused before a cell is written


# -- LoRA ----------------------------------------------------------------------------------


def test_lora_grpo_trains_the_adapter_only_against_the_adapter_free_start(taught, tmp_path):
    """kl and replay anchors on an adapter: the frozen weights stay the start point's, the KL starts at 0
    and grows, and the reference TRL keeps (a frozen copy of the fresh adapter) adds nothing to it."""
    start_model, tokenizer = taught
    save_checkpoint(start_model, tokenizer, tmp_path / "start")
    start, _ = load_pretrained(str(tmp_path / "start"))
    model = with_lora(load_pretrained(str(tmp_path / "start"))[0], LoraConfigSchema(r=4))
    cfg = compose_cell([*QUICK_TTT, "signal=majority", "ttt.anchor=kl+replay", "ttt.beta=0.5", "ttt.lora.r=4"])
    logs: list[dict] = []
    hook = StepHook(on_log=lambda step, data: logs.append(data), on_eval=lambda step: None, every=100)
    rows = REGIMES.get("correct")(SPLITS["train"][:32], TASK, None, 0)
    run_grpo(cfg, model, tokenizer, SPLITS["id"], [hook], rows)

    kl = [row["ttt/kl"] for row in logs if "ttt/kl" in row]
    assert len(kl) == 4 and kl[0] == pytest.approx(0.0, abs=1e-6) and kl[-1] > 1e-4
    assert all(math.isfinite(row["ttt/replay_nll"]) for row in logs if "ttt/replay_nll" in row)
    _assert_adapter_moved_over_the_untouched_start(model, start, tokenizer)
    reference = [p for name, p in model.named_parameters() if "lora_B.ref" in name]
    assert reference and not any(p.any() for p in reference)  # the reference adapter's update stays zero


@pytest.mark.slow  # 40-70 s on the shared 2-core machine
def test_a_whole_hf_cell_trains_a_lora_adapter_with_both_anchors(tiny, local_hf_model):
    overrides = ["model=hf", f"model.name_or_path={local_hf_model}", "ttt.lora.r=4", "ttt.anchor=kl+replay"]
    result = run(tiny(*overrides, "signal=majority", "metrics.ig.enabled=false"))
    assert result["status"] == "done", result.get("error")
    assert result["device"]["device"] == ("cuda" if HAS_CUDA else "cpu")
    assert result["config"]["ttt"]["lora"]["r"] == 4 and result["anchor"]["replay_rows"] > 0
    assert result["ttt"]["ttt/kl"] >= 0 and result["ttt"]["ttt/replay_nll"] > 0 and result["ttt"]["ttt/grad_norm"] > 0


def test_self_sft_on_an_adapter_trains_the_adapter_only(taught):
    model, tokenizer = taught
    start = copy.deepcopy(model)
    adapted = with_lora(model, LoraConfigSchema(r=4))
    rows = REGIMES.get("correct")(SPLITS["train"][:16], TASK, None, 0)
    sft(adapted, tokenizer, Dataset.from_list(rows), steps=3, batch_size=8, lr=1e-2, seed=0, max_length=96)
    _assert_adapter_moved_over_the_untouched_start(adapted, start, tokenizer)


def _assert_adapter_moved_over_the_untouched_start(adapted, start, tokenizer) -> None:
    weights = dict(adapted.named_parameters())
    trained = [name for name, p in weights.items() if p.requires_grad]
    assert trained and all(".lora_" in name and ".default." in name for name in trained)
    assert any(weights[name].abs().sum() > 0 for name in trained if "lora_B" in name)  # the adapter moved
    ids = tokenizer([p.prompt for p in SPLITS["id"]], return_tensors="pt", padding=True)
    with torch.no_grad(), adapted.disable_adapter():
        assert torch.equal(adapted(**ids).logits, start(**ids).logits)  # the start point, untouched under it


def test_lora_on_modules_the_model_does_not_have_is_a_user_error(taught):
    model, _ = taught
    with pytest.raises(UserError, match="ttt.lora: Target modules .*c_attn.* not found") as caught:
        with_lora(model, LoraConfigSchema(r=4, target_modules=["c_attn"]))
    assert "\n" not in str(caught.value)


def test_no_lora_rank_leaves_the_model_as_it_is(taught):
    model, _ = taught
    assert with_lora(model, LoraConfigSchema()) is model


# -- micro-batches ---------------------------------------------------------------------------


def _grpo_weights(taught, overrides: list[str]) -> tuple[dict, list[int]]:
    model, tokenizer = taught
    cfg = compose_cell([*QUICK_TTT, "signal=majority", "ttt.steps=2", *overrides])
    steps: list[int] = []
    hook = StepHook(on_log=lambda step, data: steps.append(step), on_eval=lambda step: None, every=100)
    run_grpo(cfg, model, tokenizer, SPLITS["id"], [hook])
    return {name: p.detach().clone() for name, p in model.named_parameters()}, steps


def test_micro_batches_accumulate_to_the_same_optimizer_step(taught_once):
    """A step's 16 sequences in passes of 4: one generation and one optimizer step, as in one pass."""
    start = {name: p.detach().clone() for name, p in taught_once[0].named_parameters()}
    whole, whole_steps = _grpo_weights(copy.deepcopy(taught_once), [])
    passes, passes_steps = _grpo_weights(copy.deepcopy(taught_once), ["ttt.micro_batch_size=4"])
    assert sorted(set(whole_steps)) == sorted(set(passes_steps)) == [1, 2]  # logged steps: optimizer steps
    moved = max((whole[name] - start[name]).abs().max().item() for name in start)
    apart = max((whole[name] - passes[name]).abs().max().item() for name in start)
    assert moved > 1e-3 and apart < 0.01 * moved  # float summation order apart, the same update


# -- the gpu preset and the device check --------------------------------------------------


def test_the_gpu_sweep_composes_for_a_local_model_and_gsm8k_file(tmp_path, local_hf_model):
    data = write_jsonl(tmp_path / "gsm8k.jsonl", gsm8k_rows(3000))  # 2000 short problems, as GSM8K's train has
    assert "Qwen/Qwen2.5-0.5B-Instruct" in (SWEEPS_DIR / "gpu.yaml").read_text()  # the preset's hub model
    cells = load_sweep("gpu", [f"task.path={data}", f"model.name_or_path={local_hf_model}"]).cells()  # no hub here
    cfg = cells[0].config
    assert cfg.model.kind == "hf" and cfg.model.name_or_path == str(local_hf_model)
    assert cfg.device == "cuda" and cfg.task.name == "gsm8k"
    assert cfg.ttt.prompts_per_step * cfg.ttt.num_generations % cfg.ttt.micro_batch_size == 0
    assert len(cells) == len({c.id for c in cells}) > 1


@pytest.mark.slow
def test_the_device_check_runs_both_cells_on_the_cpu_at_a_tiny_size(tmp_path):
    """`scripts/gpu_check.sh` on the CPU: a random Qwen2 with a BPE tokenizer and a chat template,
    gsm8k from a JSONL file it writes, full and LoRA TTT, throughput and gpu_check.json."""
    quick = ["threads=1", "catalyst.steps=4", "ttt.steps=2", "ttt.eval_every=2", "metrics.ig.reader_steps=2"]
    report = run_check(tmp_path, "tiny", "cpu", quick)
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == report
    assert [cell["status"] for cell in report["cells"].values()] == ["done", "done"]
    assert report["generate_tokens_per_s"] > 0 and all(c["ttt_tokens_per_s"] > 0 for c in report["cells"].values())
    assert all(c["peak_gpu_memory_gib"] is None for c in report["cells"].values()) and report["device"]["gpu"] is None
    lora = json.loads(open(report["cells"]["lora"]["result"]).read())
    assert lora["config"]["ttt"]["lora"]["r"] == 16 and lora["config"]["task"]["name"] == "gsm8k"
    samples = json.loads(open(report["cells"]["lora"]["result"].replace("result.json", "samples.json")).read())
    assert samples["id"][0]["prompt"].startswith("<|im_start|>user\n")  # the chat template wraps every prompt
