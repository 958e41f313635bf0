"""tse: target sound extraction (WaveMamba, Waveformer, DPM-TSE, AV-SepMamba, AV-SepFormer)."""

__version__ = "0.1.0"
