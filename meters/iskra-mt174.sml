>D
>B
->sensor53 r
>M 1
; Iskra MT174, IEC 62056-21 mode C every 10 s, handshake run by sml (300 baud, /?! first); ACK block 000 reads at 300 baud, 063035300D0A at 9600
+1,3,o,0,300,MT174,1,100,2F3F210D0A,063030300D0A
1,1-0:0.0.0*255(@1,Meter number,,meter_no,0
1,1-0:1.7.0*255(@1,Power,kW,power,3
1,1-0:1.8.0*255(@1,Import,kWh,import,3
1,1-0:1.8.1*255(@1,Import T1,kWh,import_t1,3
1,1-0:1.8.2*255(@1,Import T2,kWh,import_t2,3
1,1-0:2.8.0*255(@1,Export,kWh,export,3
1,1-0:1.6.0*255(@1,Peak demand,kW,demand_peak,3
1,0-0:F.F.0*255(@1,Error register,,error,0
#
