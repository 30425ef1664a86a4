"""catalyst-ttt: catalyst data regimes x test-time training signals, measured."""
