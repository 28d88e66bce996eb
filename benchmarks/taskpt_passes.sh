#!/usr/bin/env bash
# Static (official) vs dynamic TaskPT masks where they can matter: many passes over a small in-domain corpus.
# Notebook 01's default with a 1,000-sentence TaskPT corpus and 220 TaskPT steps (about 20 passes), the dev-F1
# tagger threshold (7.5% of tokens important; at the official argmax 1.4%, too few for the draw to matter), one
# GenePT budget; the dynamic arm is a copy of the static run folder, so GenePT and the importance pipeline are
# shared and only TaskPT and fine-tuning are rebuilt. Then both arms' fine-tuning runs paired by seed.
#   bash benchmarks/taskpt_passes.sh            (about 20 minutes on the 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
COMMON=(-p taskpt_max_sentences 1000 -p taskpt_steps '[110, 220]' -p genept_steps '[100]' -p tagger_threshold dev_f1
        -p seeds '[13, 43, 83]' -p extra_seeds '[0, 1]' --only 01 --no-calibration)
$PY -m tmlib suite --params default --out runs/passes_static "${COMMON[@]}" -p taskpt_masks static
rm -rf runs/passes_dynamic && cp -r runs/passes_static runs/passes_dynamic
$PY -m tmlib suite --params default --out runs/passes_dynamic "${COMMON[@]}" -p taskpt_masks dynamic
$PY -m tmlib compare runs/passes_static/01_selective_masking runs/passes_dynamic/01_selective_masking \
    --names static dynamic --by genept_steps method taskpt_steps --query final --out runs/passes_dynamic/static_vs_dynamic.csv
