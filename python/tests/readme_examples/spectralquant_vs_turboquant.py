from dhurandhar.spectralquant import (
    SpectralQuantCodec, SpectralQuantConfig, synthesize_spectral_kv_tensor,
)
from dhurandhar.turboquant import TurboQuantCodec, TurboQuantConfig
from dhurandhar.models import get_model

arch = get_model("gemma4-e2b")
kv, _ = synthesize_spectral_kv_tensor(
    seq_len=512, num_kv_heads=arch.num_key_value_heads, head_dim=arch.head_dim,
)

# TurboQuant — uniform Hadamard rotation
tq = TurboQuantCodec(head_dim=arch.head_dim, config=TurboQuantConfig(residual_bits=4))
print(tq.reconstruction_error(kv))
# {'cos_sim': 0.9965, 'mse': 0.00205, ...}

# SpectralQuant — eigenspectral-aware, requires PCA calibration
sq = SpectralQuantCodec(head_dim=arch.head_dim, config=SpectralQuantConfig(avg_bits=4))
sq.calibrate(kv)          # one-time PCA (~15s on real data)
print(sq.reconstruction_error(kv))
# {'cos_sim': 0.9982, 'mse': 0.00090, 'd_eff': 12, ...}
