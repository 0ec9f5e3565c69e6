>D
>B
->sensor53 r
>M 1
; Iskra MT382, Dutch DSMR 3.0 P1 port: 9600 7E1 (emulated on 8N1 as Tasmota does), no CRC.
; DSMR 3 puts the gas reading on the line after 0-1:24.3.0, which line matching cannot reach.
+1,3,o,0,9600,MT382,1
1,1-0:1.8.1(@1,Import T1,kWh,import_t1,3
1,1-0:1.8.2(@1,Import T2,kWh,import_t2,3
1,1-0:2.8.1(@1,Export T1,kWh,export_t1,3
1,1-0:2.8.2(@1,Export T2,kWh,export_t2,3
1,0-0:96.14.0(@1,Tariff,,tariff,0
1,1-0:1.7.0(@1,Power import,kW,power_imp,2
1,1-0:2.7.0(@1,Power export,kW,power_exp,2
1,0-0:17.0.0(@1,Threshold,A,threshold,0
1,0-0:96.3.10(@1,Switch,,switch,0
#
