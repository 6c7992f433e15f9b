
L
J
$b76hkjvylwawdjgxm49qvlr3wlwy88pb-src ìµ¤¢ƒnJj°eÿ N˜|“=6&}ÀnL,¢ë¦—I€ ¦xÏEYø[ÊË¦'\Þõ@­½Ÿüw‹Ñ›Î@)õ2" ¦xÏEYø[ÊË¦'\Þõ@­½Ÿüw‹Ñ›Î@)õ