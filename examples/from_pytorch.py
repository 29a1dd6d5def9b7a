"""Run a PyTorch GRU's weights in cgru and compare the outputs.

Nothing is trained: this is what porting a trained ``torch.nn.GRU`` looks like. cgru's
functional API uses PyTorch's conventions, so the weights go across unchanged:

    torch.nn.GRU            cgru.gru_forward
    weight_ih_l0 (3H, I) -> w_ih     gate order r, z, n in both
    weight_hh_l0 (3H, H) -> w_hh
    bias_ih_l0   (3H,)   -> b_ih
    bias_hh_l0   (3H,)   -> b_hh
    x (T, B, I)          -> x        time-major (PyTorch's default, batch_first=False)
    h0 (1, B, H)         -> h0[0]    one layer, one direction
    packed sequences     -> lengths=

Run:  python examples/from_pytorch.py   (needs torch)
"""
import numpy as np
import torch

import cgru

TOLERANCE = 1e-5  # float32 results; the two libraries sum in different orders

torch.manual_seed(0)
T, B, I, H = 25, 8, 12, 32

torch_gru = torch.nn.GRU(input_size=I, hidden_size=H)  # a trained model would be loaded here
x = torch.randn(T, B, I)
h0 = torch.randn(1, B, H)

# The weights, as NumPy arrays in PyTorch's layout.
w_ih, w_hh, b_ih, b_hh = (p.detach().numpy() for p in (
    torch_gru.weight_ih_l0, torch_gru.weight_hh_l0,
    torch_gru.bias_ih_l0, torch_gru.bias_hh_l0))

# 1. Whole sequences.
with torch.no_grad():
    y_torch, h_torch = torch_gru(x, h0)
y, h_n, _ = cgru.gru_forward(x.numpy(), h0[0].numpy(), w_ih, w_hh, b_ih, b_hh,
                             training=False)
diff_full = max(np.abs(y - y_torch.numpy()).max(), np.abs(h_n - h_torch[0].numpy()).max())
print(f"whole sequences:    y {y.shape}, h_n {h_n.shape}, "
      f"largest difference {diff_full:.2e}")

# 2. Sequences of different lengths: PyTorch packs them, cgru takes their lengths.
lengths = np.array([25, 3, 17, 25, 1, 9, 12, 20])
packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.from_numpy(lengths),
                                                 enforce_sorted=False)
with torch.no_grad():
    y_packed, h_torch = torch_gru(packed, h0)
y_torch, _ = torch.nn.utils.rnn.pad_packed_sequence(y_packed, total_length=T)
y, h_n, _ = cgru.gru_forward(x.numpy(), h0[0].numpy(), w_ih, w_hh, b_ih, b_hh,
                             lengths=lengths, training=False)
diff_packed = max(np.abs(y - y_torch.numpy()).max(), np.abs(h_n - h_torch[0].numpy()).max())
print(f"variable lengths:   y {y.shape}, h_n {h_n.shape}, "
      f"largest difference {diff_packed:.2e}")

largest = max(diff_full, diff_packed)
print(f"largest difference: {largest:.2e} (tolerance {TOLERANCE:.0e})")
if not largest < TOLERANCE:
    raise SystemExit("cgru and torch.nn.GRU disagree")
