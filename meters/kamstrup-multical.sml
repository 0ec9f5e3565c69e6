>D
>B
=>sensor53 r

; Kamstrup MULTICAL 4xx/6xx/8xx heat meter over the optical head (KMP, 1200 baud, 8N2): the Tasmota
; docs' script, with one change: sml applies a register's negative exponent (temperatures and the
; volume come as 1/100), which Tasmota ignores, so the `@i0:100` divisors of the docs' script are
; `@i0:1` here.
>M 1
+1,3,kN2,0,1200,KSMC403,1,10,3F1007003C005600570059004A0044007B
1,3F10003Ckstr@i0:1000,Wärmemenge,MWh,HeatEnergyE1,3
1,3F10x08xx0056kstr@i0:1,Vorlauftemp.,°C,PreTemp,2
1,3F10x15xx0057kstr@i0:1,Rücklauftemp.,°C,AftTemp,2
1,3F10x22xx0059kstr@i0:1,Temp.diff.,°C,DifTemp,2
1,3F10x29xx004Akstr@i0:1,Fließgeschw.,l/h,Flow,0
1,3F10x36xx0044kstr@i0:1,Volumenstrom,m³,Volume,2
1,3F10x45xx007Bkstr@#,max. Fluss am,,MaxFlowDate,0
#
