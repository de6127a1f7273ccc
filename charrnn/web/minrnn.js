// minGRU's and minLSTM's step (charrnn/families/minrnn/model.py, MinLayer.step): in each pre-norm residual
// block the gate and the candidate read the input only, h = lerp(h, g(cand), sigmoid(z)), then the MLP.
CharrnnSteps.minrnn = function (W, config, M) {
  "use strict";
  var L = config.n_layers, H = config.hidden, lstm = config.model === "minlstm";
  var x = M.floats(H), a = M.floats(H), p = M.floats((lstm ? 3 : 2) * H);
  var up = M.floats(4 * H), down = M.floats(H), logits = M.floats(config.n_outputs);
  var h = [];
  for (var k = 0; k < L; k++) h.push(M.floats(H));
  function g(v) { return v >= 0 ? v + 0.5 : M.sigmoid(v); }
  function linear(name, input, out) {
    out.set(W[name + ".bias"].data);
    M.matvec(W[name + ".weight"], input, out);
  }
  function reset() {
    for (var k = 0; k < L; k++) h[k].fill(0);
  }
  function step(id) {
    var j;
    x.set(W["embed.weight"].row(id));
    for (var k = 0; k < L; k++) {
      var pre = "layers." + k + ".", hk = h[k];
      M.layerNorm(x, W[pre + "ln1.weight"], a);
      linear(pre + "proj", a, p);
      for (j = 0; j < H; j++) {
        var zLogit = lstm ? M.softplus(-p[j]) - M.softplus(-p[H + j]) : p[j];
        var cand = p[(lstm ? 2 : 1) * H + j], z = M.sigmoid(zLogit), v = g(cand);
        hk[j] = hk[j] + z * (v - hk[j]);
        x[j] += hk[j];
      }
      M.layerNorm(x, W[pre + "ln2.weight"], a);
      linear(pre + "mlp.0", a, up);
      for (j = 0; j < 4 * H; j++) up[j] = M.geluTanh(up[j]);
      linear(pre + "mlp.2", up, down);
      for (j = 0; j < H; j++) x[j] += down[j];
    }
    M.layerNorm(x, W["ln_f.weight"], a);
    linear("head", a, logits);
    return logits;
  }
  reset();
  return {reset: reset, step: step};
};
