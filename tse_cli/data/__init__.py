"""Datasets: FSD Kaggle 2018 / TAU 2019 readers, the synthetic corpus, mixture specifications and rendering.

Modules (one job each; the tree with its import order is in docs/architecture.md):

- `layout`: the names of a rendered set (splits, files, folders, meta.csv columns, recipe.json).
- `sources`: readers and validation of FSD Kaggle 2018 and TAU Urban Acoustic Scenes 2019 as downloaded.
- `synthetic`: a procedural corpus in the same FSD/TAU layouts (no downloads needed).
- `wavio`: decoding + resampling with an on-disk cache of decoded sources; WAV writing.
- `loudness`: ITU-R BS.1770 integrated loudness (LUFS), as Scaper uses for its SNRs.
- `dpm`: the Tim-TSENet / DPM-TSE recipe (plan a JSON specification, render it).
- `scenes`: the Waveformer recipe (Scaper-compatible `.jams` specifications and their rendering).
- `recipes`: one `Recipe` object per recipe, which the build asks instead of comparing names.
- `render`, `scan`, `workers`, `lock`: rendering one mixture, scanning sources, the process pool, the folder lock.
- `build`: runs a recipe over splits with resume and the closing summary; `rerender`: existing specifications.
- `sets`: torch `Dataset` over rendered sets of either recipe (`open_set`, `validate_set`).
- `muse`: MuSE-style audio-visual speaker-extraction sets.

Rendered set layouts (what `tse mix` writes, what `open_set` reads):

dpm-tse (16 kHz, 10 s, PCM_16), readable by the published DPM-TSE loader::

    OUT/recipe.json                      {"recipe": "dpm-tse", "sample_rate": 16000, "seed": ..., ...}
    OUT/meta.csv                         subset,folder,file,cls,onset,offset  (one row per finished mixture)
    OUT/<split>/<split>_<n>.wav          mixture (n counts from 1)
    OUT/<split>/<split>_<n>_lab.wav      target alone on the 10 s canvas
    OUT/<split>/<split>_<n>_re.wav       reference clip of the same class (other file), from sample 0
    OUT/specs/<split>/<split>_<n>.json   the specification (sources, files, offsets, gains, SNRs, seed)
    OUT/specs/<split>/<split>_<n>.done.json  render record (peak, clipped samples, normalisation gain)
    OUT/stems/<split>/<split>_<n>_{background,int1,int2,int3}.wav  only with --stems

waveformer (44.1 kHz, 6 s, PCM_16); the spec tree is the authors' FSDSoundScapes layout::

    OUT/recipe.json                      {"recipe": "waveformer", "sample_rate": 44100, ...}
    OUT/jams/<split>/<n>/mixture.jams    Scaper-compatible specification (namespace "scaper")
    OUT/jams/<split>/<n>/gt_events.csv   tab-separated: label, source_file, onset, offset, snr
    OUT/<split>/<n>/mixture.wav          the scene
    OUT/<split>/<n>/<Label>.wav          isolated foreground events of that label (summed if repeated)
    OUT/<split>/<n>/background.wav       the background as mixed
    OUT/<split>/<n>/render.json          labels in order, events (label, onset, offset, snr, gain), peak, gain

`<split>` is `train`, `val` or `test`; `<n>` is the mixture index (`%05d` for waveformer). Source trees:
see `tse_cli.data.sources`. Decoded, resampled sources are cached under `OUT/.cache` (or `--cache-dir`).
"""
