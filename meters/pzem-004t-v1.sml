>D
>B
->sensor53 r
; PZEM-004T v1 (7-byte protocol, 9600 8N1), polled in turn: B0 voltage, B1 current, B2 power, B3 energy.
; Replies: A0 VV VV v 00 00 CS (v: tenths), A1 AA AA a 00 00 CS (a: hundredths), A2 PP PP 00 00 00 CS,
; A3 EE EE EE 00 00 CS (24-bit Wh: read as 32 bits with the zero byte after it, so divided by 256).
>M 1
+1,3,p,0,9600,PZEM,1,10,B0,B1,B2,B3
1,A0UUuu@1,Voltage whole,V,Volt_int,0
1,A0xxxxuu@10,Voltage tenths,V,Volt_dec,1
1,=m 1+2 @1,Voltage,V,Voltage,1
1,A1UUuu@1,Current whole,A,Amp_int,0
1,A1xxxxuu@100,Current hundredths,A,Amp_dec,2
1,=m 4+5 @1,Current,A,Current,2
1,A2UUuu@1,Power,W,Power,0
1,A3UUuuUUuu@256,Energy,Wh,Energy,0
#
